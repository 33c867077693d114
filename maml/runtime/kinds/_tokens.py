"""Tokenisation kept in the worker across attempts of one step.

An OOM that halves the batch retries the same texts: re-tokenising 24,576 texts took ~15 s
per attempt. `token_cached(loaded, step_id)` wraps the tokenizer so each text is encoded
once (truncated, not padded) and every later batch, of any size, is padded from the stored
encodings with `tokenizer.pad`, giving exactly what `tokenizer(batch, padding=True, ...)`
gives. The store lives as long as the worker and holds one step's encodings: a new step
id starts it afresh, so memory is bounded by one step's inputs. It sits outside `ctx.cache`
on purpose: `clear_cache` frees GPU memory, and token ids are host lists that the retry
needs again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_STORE: dict[str, Any] = {"step": None, "entries": {}}


class CachingTokenizer:
    """A tokenizer whose `__call__(texts, ...)` encodes each text once per step."""

    def __init__(self, tokenizer: Any, entries: dict[tuple[Any, ...], dict[str, Any]]) -> None:
        self._tokenizer = tokenizer
        self._entries = entries
        # the fast tokenizer's advice to call __call__ instead of pad() does not apply here
        getattr(tokenizer, "deprecation_warnings", {})["Asking-to-pad-a-fast-tokenizer"] = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, texts: list[str], *, return_tensors: str | None = None,
                 padding: Any = True, **options: Any) -> Any:
        if isinstance(texts, str) or padding is not True:
            return self._tokenizer(texts, return_tensors=return_tensors, padding=padding,
                                   **options)
        settings = tuple(sorted((k, repr(v)) for k, v in options.items()))
        missing = list(dict.fromkeys(t for t in texts if (t, settings) not in self._entries))
        if missing:
            encoded = self._tokenizer(missing, **options)
            names = list(encoded.keys())
            for row, text in enumerate(missing):
                self._entries[(text, settings)] = {n: encoded[n][row] for n in names}
        features = [self._entries[(text, settings)] for text in texts]
        return self._tokenizer.pad(features, padding=True, return_tensors=return_tensors)


def token_cached(loaded: Any, step_id: str) -> Any:
    """`loaded` (with `.tokenizer`) whose tokenizer keeps encodings for `step_id`'s attempts."""
    if _STORE["step"] != step_id:
        _STORE["step"], _STORE["entries"] = step_id, {}
    tokenizer = loaded.tokenizer
    if isinstance(tokenizer, CachingTokenizer):
        tokenizer = tokenizer._tokenizer
    return dataclasses.replace(loaded, tokenizer=CachingTokenizer(tokenizer, _STORE["entries"]))


def cached_count() -> int:
    """How many (text, settings) encodings the worker holds now."""
    return len(_STORE["entries"])
