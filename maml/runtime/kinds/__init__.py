"""Step kinds: the interface and the registry are in maml/kinds.py (re-exported here)."""

from maml.runtime.kinds.base import Kind, KindError, StepContext, StepSpec, get_kind, kind_names

__all__ = ["Kind", "KindError", "StepContext", "StepSpec", "get_kind", "kind_names"]
