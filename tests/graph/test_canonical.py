"""Canonical JSON: one byte form per value, stable across a round trip."""

from __future__ import annotations

import json
import math
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.graph.canonical import CanonicalError, digest, dumps, dumps_finite, normalise

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children,
                                                                      max_size=5),
    max_leaves=30)


@given(json_values)
def test_round_trip_gives_the_same_bytes(value):
    first = dumps(value)
    assert dumps(json.loads(first)) == first


@given(st.dictionaries(st.text(), json_values, min_size=2, max_size=8))
def test_key_order_does_not_change_the_bytes(value):
    reordered = dict(reversed(list(value.items())))
    assert dumps(reordered) == dumps(value)


@given(json_values)
def test_bytes_are_compact_utf8_with_sorted_keys(value):
    text = dumps(value).decode("utf-8")
    assert text == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_non_ascii_is_written_as_itself_not_escaped():
    assert dumps({"msg": "Grüße ✓"}) == '{"msg":"Grüße ✓"}'.encode("utf-8")


def test_floats_and_ints_are_distinct_values():
    assert dumps(1) == b"1"
    assert dumps(1.0) == b"1.0"
    assert dumps(0.1) == b"0.1"
    assert dumps(1e-5) == b"1e-05"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, {"x": [math.nan]}, object()])
def test_values_without_a_json_form_are_rejected(bad):
    with pytest.raises(CanonicalError):
        dumps(bad)


def test_lone_surrogates_are_replaced_not_fatal():
    out = dumps({"m": "bad \udcff byte"})
    assert out == '{"m":"bad \ufffd byte"}'.encode("utf-8")


@given(st.dictionaries(st.integers(min_value=0, max_value=1000), st.integers(), min_size=2))
def test_normalise_makes_int_keys_stable_across_a_round_trip(value):
    plain = normalise(value)
    assert dumps(json.loads(dumps(plain))) == dumps(plain)


def test_normalise_converts_tuples_paths_and_sets():
    assert normalise({"p": PurePosixPath("/a/b"), "t": (1, 2), "s": {3, 1}}) == \
        {"p": "/a/b", "t": [1, 2], "s": [1, 3]}


def test_digest_is_sha256_hex():
    assert digest(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@given(json_values)
def test_the_fast_encoder_writes_the_same_bytes(value):
    assert dumps_finite(value) == dumps(value)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_the_fast_encoder_agrees_on_every_float(value):
    assert dumps_finite({"t": value, "v": [value]}) == dumps({"t": value, "v": [value]})


@pytest.mark.parametrize("value", [1e-05, 5e-05, 1e-9, 1.5e-7, 2.5e-300, 1e16, 1e22, 0.0001, -0.0])
def test_the_fast_encoder_agrees_where_orjson_formats_differ(value):
    assert dumps_finite([value]) == dumps([value])


def test_normalise_keeps_non_finite_floats_as_strings():
    assert normalise({"temperature": math.nan, "limit": math.inf}) == \
        {"temperature": "nan", "limit": "inf"}
