"""The cheap pre-check that decides whether YAML needs the event pass (depth, aliases)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maml.document.yamlload import MAX_DEPTH, _may_expand_or_nest


def _deepest(text: str) -> int:
    """Nesting depth of the brackets, closing brackets below zero ignored (the reference)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


@given(st.text(alphabet="[]{}a: ,\n", max_size=400), st.integers(0, 3))
def test_the_pre_check_agrees_with_the_bracket_depth(filler, repeat):
    text = "[" * (MAX_DEPTH - 2 + repeat) + filler + "]" * MAX_DEPTH
    assert _may_expand_or_nest(text) is (_deepest(text) > MAX_DEPTH)


def test_an_anchor_always_needs_the_event_pass():
    assert _may_expand_or_nest("a: &x 1\nb: *x\n")


def test_ten_thousand_flat_steps_need_no_event_pass():
    steps = "\n".join(f"  - {{id: s{i}, needs: [s{i - 1}]}}" for i in range(1, 10_000))
    assert not _may_expand_or_nest("pipeline:\n" + steps)
