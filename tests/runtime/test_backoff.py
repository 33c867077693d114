"""Backoff: the waits a policy declares are the waits the executor gets."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.runtime.policies import Backoff, effective_policy


def waits(backoff: Backoff, count: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [backoff.delay(n, rng) for n in range(count)]


def test_waits_without_jitter_double_up_to_the_cap():
    assert waits(Backoff(initial=1, max=5, factor=2, jitter=0), 5) == [1, 2, 4, 5, 5]


def test_declared_policy_backoff_gives_declared_waits():
    policy = effective_policy({"backoff": {"initial": "250ms", "max": "1s", "factor": 3,
                                           "jitter": 0}}, None, "cpu")
    assert waits(policy.backoff, 4) == [0.25, 0.75, 1.0, 1.0]


def test_constant_wait_with_factor_one():
    assert waits(Backoff(initial=0.2, max=10, factor=1, jitter=0), 3) == [0.2, 0.2, 0.2]


def test_zero_initial_never_waits_even_with_jitter():
    assert waits(Backoff(initial=0, max=30, factor=2, jitter=0.5), 6) == [0.0] * 6


def test_same_seed_same_waits_and_jitter_actually_varies():
    backoff = Backoff(initial=1, max=100, factor=2, jitter=0.5)
    assert waits(backoff, 8, seed=7) == waits(backoff, 8, seed=7)
    assert len({round(w / backoff.base(n), 6) for n, w in enumerate(waits(backoff, 8))}) > 1


def test_huge_retry_number_is_capped_not_overflowing():
    assert Backoff(initial=1, max=30, factor=10, jitter=0).delay(10_000, random.Random()) == 30


@pytest.mark.parametrize("field,value", [("factor", 0.5), ("jitter", 1.5), ("initial", -1),
                                         ("max", float("inf")), ("jitter", "x")])
def test_bad_backoff_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"backoff.{field}|backoff.initial and backoff.max"):
        Backoff(**{field: value})


@given(initial=st.floats(0.001, 100), cap=st.floats(0.001, 1000), factor=st.floats(1, 10),
       jitter=st.floats(0, 1), n=st.integers(0, 2000), seed=st.integers(0, 2**32))
def test_jittered_wait_stays_within_bounds(initial, cap, factor, jitter, n, seed):
    backoff = Backoff(initial=initial, max=cap, factor=factor, jitter=jitter)
    try:
        base = min(initial * factor ** n, cap)
    except OverflowError:
        base = cap
    wait = backoff.delay(n, random.Random(seed))
    assert 0 <= wait <= cap
    assert base * (1 - jitter) - 1e-9 * base <= wait <= base * (1 + jitter) + 1e-9 * base
