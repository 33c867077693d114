"""Canonical JSON: the one byte form of a value that its hash and signature cover.

maml's one encoder: the graph's nodes, the run store's commits and cache keys, step
checkpoints all go through `dumps`. It lives below `runtime/` and `graph/` (a worker imports
it without the graph package).

maml's canonical form is what Python's C JSON encoder writes with these settings:

* object keys sorted by Unicode code point (Python's `str` order), no duplicate keys;
* separators `,` and `:` with no whitespace; the whole text encoded as UTF-8,
  non-ASCII characters written as themselves (`ensure_ascii=False`), never as `\\uXXXX`;
* integers as decimal digits; floats as their shortest round-trip repr (`0.1`, `1e-05`,
  `1.0`): a float stays a float, so `1` and `1.0` are different values with different bytes;
* NaN and ±Infinity are rejected (JSON has no such numbers);
* tuples are lists; `pathlib.Path`, sets (sorted) and dataclasses are converted by `_jsonable`;
  anything else is rejected;
* strings holding lone surrogates (not encodable as UTF-8) have them replaced by U+FFFD;
* keys must be strings: free-form data passes through `normalise()` first, which makes them so
  (and turns a non-finite float into the string "nan"/"inf": a health sample with a NaN must not
  fail a run).

`dumps_finite()` gives the same bytes through orjson when it is installed (the recorder's hot
path); the tests hold the two to byte equality.

The property the tests hold it to: `dumps(json.loads(dumps(x))) == dumps(x)` for every value,
and equal values (built in any key order) give equal bytes. RFC 8785 (JCS) was considered; it
sorts keys by UTF-16 unit and formats numbers the ECMAScript way, which would need a pure-Python
encoder at a tenth of the speed, and the record needs ≥100k nodes/s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from typing import Any

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False, check_circular=False)


try:  # optional: orjson writes the same bytes 3-5x faster (see dumps_finite)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

_SURROGATE = re.compile("[\ud800-\udfff]")
#: orjson and Python differ only on small floats: "1e-9" vs "1e-09", "0.00005" vs "5e-05"
_SMALL_FLOAT = re.compile(rb"\de-\d(?!\d)|0\.0000")


class CanonicalError(ValueError):
    """The value has no canonical JSON form (NaN, infinity, an unknown type)."""


def _jsonable(value: Any) -> Any:
    """The JSON form of the few non-JSON types a record may carry."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=dumps)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    raise CanonicalError(f"{type(value).__name__} has no canonical JSON form: {value!r:.80}")


_ENCODER.default = _jsonable  # type: ignore[method-assign]


def normalise(value: Any) -> Any:
    """A plain JSON value for free-form data (params, changes, health samples): keys become
    strings (the C encoder would sort int keys as ints, then write them as strings, so the
    bytes would change after a round trip), tuples lists, lone surrogates U+FFFD."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {normalise(str(k)): normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)          # "nan", "inf": a record keeps what it was given
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return normalise(_jsonable(value))


def dumps(value: Any) -> bytes:
    """The canonical bytes of `value` (see the module docstring); raises CanonicalError."""
    try:
        text = _ENCODER.encode(value)
    except ValueError as exc:  # NaN / inf
        raise CanonicalError(f"not canonical JSON: {exc}") from None
    except TypeError as exc:   # mixed key types, unhashable keys
        raise CanonicalError(f"not canonical JSON: {exc}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _ENCODER.encode(normalise(value)).encode("utf-8")


def digest(data: bytes) -> str:
    """sha256 of `data`, lower-case hex: the id of a node, the link of the chain."""
    return hashlib.sha256(data).hexdigest()


def sha256_of(value: Any) -> str:
    """sha256 of the canonical bytes of `value` (raises CanonicalError like `dumps`)."""
    return digest(dumps(value))


def dumps_finite(value: Any) -> bytes:
    """dumps() for values whose floats the caller knows are finite (orjson would write NaN as
    null instead of refusing it). Same bytes as dumps(), 3-5x faster where orjson is installed:
    its output is used unless it holds a small float, whose form differs from Python's."""
    if _orjson is None:
        return dumps(value)
    try:
        out = _orjson.dumps(value, option=_orjson.OPT_SORT_KEYS)
    except TypeError:   # big ints, non-str keys, surrogates, Paths...: the exact path handles them
        return dumps(value)
    if (b"e-" in out or b"0.0000" in out) and _SMALL_FLOAT.search(out):  # `in` is cheap
        return dumps(value)
    return out
