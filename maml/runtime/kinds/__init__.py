"""Step kinds: see base.py for the interface and the registry."""

from maml.runtime.kinds.base import Kind, KindError, StepContext, StepSpec, get_kind, kind_names

__all__ = ["Kind", "KindError", "StepContext", "StepSpec", "get_kind", "kind_names"]
