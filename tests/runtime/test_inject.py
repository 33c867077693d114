"""Fault specs: `STEP:ERROR[@ATTEMPTS]` and front-matter `faults:`."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maml.runtime.inject import Fault, build_fault_plan, parse_fault
from maml.vocabulary import INJECTABLE_ERRORS


@pytest.mark.parametrize("spec, fault", [
    ("train:oom", Fault("train", "oom", (1,))),
    ("train:oom@1,2", Fault("train", "oom", (1, 2))),
    ("ns:step:worker_lost@3", Fault("ns:step", "worker_lost", (3,))),
    ({"step": "enc", "error": "hang", "attempts": [2, 4]}, Fault("enc", "hang", (2, 4))),
    ({"step": "enc", "error": "timeout"}, Fault("enc", "timeout", (1,))),
])
def test_valid_specs(spec, fault):
    assert parse_fault(spec) == fault


@pytest.mark.parametrize("spec, message", [
    ("oom", "use STEP:ERROR"),
    ("train:explode", "cannot inject 'explode'"),
    ("train:oom@0", "1-based"),
    ("train:oom@one", "numbers"),
    ("train:oom@", "1-based"),
    ({"error": "oom"}, "names no step"),
    ({"step": "s", "error": "invalid_input"}, "cannot inject"),
])
def test_invalid_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_fault(spec)


@given(step=st.from_regex(r"[a-z][a-z0-9_.:-]{0,12}", fullmatch=True),
       error=st.sampled_from(INJECTABLE_ERRORS),
       attempts=st.lists(st.integers(1, 50), min_size=1, max_size=5))
def test_round_trip(step, error, attempts):
    spec = f"{step}:{error}@{','.join(map(str, attempts))}"
    plan = build_fault_plan([spec], None)
    for attempt in range(1, 52):
        expected = error if attempt in attempts else None
        assert plan.for_attempt(step, attempt) == expected


def test_command_line_and_document_faults_combine():
    plan = build_fault_plan(["a:oom@1"], ["b:transient@2", {"step": "a", "error": "hang",
                                                            "attempts": "3"}])
    assert plan.for_attempt("a", 1) == "oom" and plan.for_attempt("a", 3) == "hang"
    assert plan.for_attempt("b", 2) == "transient" and plan.for_attempt("b", 1) is None
    assert plan.steps() == {"a", "b"}
