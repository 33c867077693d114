"""The kind interface, re-exported from `maml.kinds` where it now lives (below both the
document and the runtime layers) so that `from maml.runtime.kinds.base import Kind,
StepSpec, get_kind` keeps working for kinds and plugins written against it."""

from maml.kinds import (
    BUILTIN_KINDS,
    ENTRY_POINT_GROUP,
    Kind,
    KindError,
    StepContext,
    StepSpec,
    get_kind,
    kind_names,
    params_schema,
)

__all__ = ["BUILTIN_KINDS", "ENTRY_POINT_GROUP", "Kind", "KindError", "StepContext", "StepSpec",
           "get_kind", "kind_names", "params_schema"]
