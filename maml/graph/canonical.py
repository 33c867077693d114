"""The graph's canonical JSON is maml's one encoder, `maml.canonical` (kept importable here:
the graph's modules and its users spell it `maml.graph.canonical`)."""

from maml.canonical import CanonicalError, digest, dumps, dumps_finite, normalise, sha256_of

__all__ = ["CanonicalError", "digest", "dumps", "dumps_finite", "normalise", "sha256_of"]
