"""decide(): recovery chains, retries, devices — driven the way the executor drives it."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maml.runtime.events import DeviceRef, ErrorInfo
from maml.runtime.policies import (
    ACTIONS,
    DEFAULT_CHAINS,
    AttemptState,
    Policy,
    decide,
    default_policy,
    effective_policy,
)
from maml.vocabulary import ERROR_CLASSES, NEVER_RETRIED, RECOVERY_ACTIONS


def error(cls: str, device: str | None = None) -> ErrorInfo:
    ref = DeviceRef(id=device, kind=device.split(":")[0]) if device else None
    return ErrorInfo(error_class=cls, exception_type="X", message="boom", device=ref)


def policy(on: dict, hardware="cuda", **keys) -> Policy:
    return effective_policy(None, {"on": on, "backoff": {"jitter": 0}, **keys}, hardware)


def run_failures(pol, state, classes, devices=("cuda:0", "cuda:1", "cpu")):
    """Fail len(classes) attempts in a row like the executor would; the decisions taken."""
    decisions = []
    for cls in classes:
        err = error(cls, state.device)
        decision = decide(pol, state, err, devices=list(devices), rng=random.Random(0))
        state.advance(err, decision)
        decisions.append(decision)
    return decisions


def test_every_recovery_action_has_a_strategy():
    assert set(ACTIONS) == set(RECOVERY_ACTIONS)


def test_default_table_covers_every_class_for_both_hardware_classes():
    for hardware in ("cuda", "cpu"):
        assert set(DEFAULT_CHAINS[hardware]) == set(ERROR_CLASSES)
        assert set(default_policy(hardware).on) == set(ERROR_CLASSES)


def test_two_ooms_halve_64_to_16():
    state = AttemptState("s", params={"batch_size": 64}, device="cuda:0")
    decisions = run_failures(policy({"oom": ["halve_batch", "cpu"]}), state, ["oom", "oom"])
    assert [d.changes for d in decisions] == [{"batch_size": [64, 32]}, {"batch_size": [32, 16]}]
    assert state.attempt == 3 and state.params == {"batch_size": 16}
    assert state.device == "cuda:0"


def test_halve_batch_at_one_passes_over_to_cpu():
    state = AttemptState("s", params={"batch_size": 2}, device="cuda:0")
    decisions = run_failures(policy({"oom": ["halve_batch", "cpu"]}), state, ["oom"] * 3)
    assert [d.action for d in decisions] == ["halve_batch", "cpu", "retry"]
    assert state.params["batch_size"] == 1 and state.device == "cpu"


def test_lower_precision_walks_the_ladder_then_is_passed_over():
    state = AttemptState("s", params={"precision": "fp32"}, device="cuda:0")
    pol = policy({"oom": ["lower_precision", "restart_worker"]}, retries=5)
    decisions = run_failures(pol, state, ["oom"] * 4)
    assert [d.action for d in decisions] == ["lower_precision", "lower_precision",
                                             "restart_worker", "retry"]
    assert [d.changes.get("precision") for d in decisions[:2]] == [["fp32", "fp16"],
                                                                  ["fp16", "int8"]]
    assert decisions[2].restart_worker and not decisions[3].restart_worker


def test_switch_method_once_then_next_action():
    state = AttemptState("s", params={"method": "statevector"}, device="cpu")
    decisions = run_failures(policy({"oom": ["switch_method", "skip"]}, "cpu"), state, ["oom"] * 2)
    assert decisions[0].params["method"] == "matrix_product_state"
    assert decisions[1].skip and not decisions[1].give_up


def test_next_device_prefers_same_class_and_avoids_failed_devices():
    state = AttemptState("s", device="cuda:0", failed_devices={"cuda:1"})
    pol = policy({"cuda_error": ["next_device", "fail"]}, retries=9)
    devices = ("cuda:0", "cpu", "cuda:1", "cuda:2", "cuda:3")
    decisions = run_failures(pol, state, ["cuda_error"] * 4, devices)
    assert [d.device for d in decisions[:3]] == ["cuda:2", "cuda:3", "cpu"]
    assert decisions[3].give_up and decisions[3].action == "fail"
    assert all(d.restart_worker for d in decisions[:3])   # cuda_error poisons the worker


def test_next_device_prefers_a_gpu_on_another_node_then_the_given_order():
    # a Ray cluster of two nodes with two GPUs each; candidates come best first (by load),
    # and the best one shares cuda:0's node
    nodes = {"cuda:0": "A", "cuda:1": "B", "cuda:2": "A", "cuda:3": "B"}
    pol = policy({"cuda_error": ["next_device", "fail"]}, retries=9)
    state = AttemptState("s", device="cuda:0")
    devices = ("cuda:2", "cpu", "cuda:3", "cuda:1")
    first = decide(pol, state, error("cuda_error", "cuda:0"), devices=devices,
                   rng=random.Random(), nodes=nodes)
    assert first.device == "cuda:3"                   # node B, in the order given
    # without node knowledge (one machine) the given order rules, as before
    local = decide(pol, state, error("cuda_error", "cuda:0"), devices=devices,
                   rng=random.Random())
    assert local.device == "cuda:2"
    # only same-node GPUs left: one of them before leaving the class
    same = decide(pol, AttemptState("s", device="cuda:0", failed_devices={"cuda:1", "cuda:3"}),
                  error("cuda_error", "cuda:0"), devices=devices, rng=random.Random(),
                  nodes=nodes)
    assert same.device == "cuda:2"


@given(st.lists(st.sampled_from(["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cpu"]),
                unique=True, min_size=1),
       st.dictionaries(st.sampled_from(["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
                       st.sampled_from(["A", "B"])),
       st.sampled_from(["cuda:0", "cuda:1", "cuda:2", "cuda:3"]))
def test_next_device_with_nodes_only_reorders_never_widens(devices, nodes, here):
    """Node knowledge changes which allowed device comes first, never the set: it stays in
    the step's list, off the failed device, and in the same class whenever one is left."""
    pol = policy({"cuda_error": ["next_device", "fail"]}, retries=9)
    state = AttemptState("s", device=here)
    with_nodes = decide(pol, state, error("cuda_error", here), devices=devices,
                        rng=random.Random(0), nodes=nodes)
    without = decide(pol, state, error("cuda_error", here), devices=devices,
                     rng=random.Random(0))
    assert (with_nodes.device is None) == (without.device is None)
    if with_nodes.device is not None:
        assert with_nodes.device in devices and with_nodes.device != here
        assert with_nodes.device.startswith("cuda") == without.device.startswith("cuda")
        others = [d for d in devices if d.startswith("cuda") and d != here
                  and here in nodes and nodes.get(d) != nodes[here]]
        if others:
            assert with_nodes.device == others[0]
        if here not in nodes:                         # nothing known: the order as before
            assert with_nodes.device == without.device


def test_next_device_never_returns_to_a_device_an_earlier_error_came_from():
    # the executor forgot failed_devices; the errors' own devices still rule cuda:0 out
    state = AttemptState("s", device="cuda:1", errors=[error("oom", "cuda:0")])
    decision = decide(policy({"oom": ["next_device"]}), state, error("oom", "cuda:1"),
                      devices=["cuda:0", "cuda:1"], rng=random.Random())
    assert decision.action == "retry" and decision.device is None


@pytest.mark.parametrize("cls", sorted(NEVER_RETRIED))
def test_never_retried_classes_give_up_at_once_even_with_a_retry_chain(cls):
    state = AttemptState("s")
    decision = decide(policy({cls: ["retry"]}, retries=10), state, error(cls),
                      devices=["cpu"], rng=random.Random())
    assert decision.give_up and not decision.another_attempt
    assert cls in decision.reason and decision.delay == 0


def test_retries_exhausted_gives_up():
    state = AttemptState("s", device="cpu")
    decisions = run_failures(policy({}, "cpu", retries=2), state, ["transient"] * 3)
    assert [d.give_up for d in decisions] == [False, False, True]
    assert "retries exhausted" in decisions[2].reason and state.retries_used == 2


def test_zero_retries_gives_up_on_first_failure():
    decision = decide(policy({}, retries=0), AttemptState("s"), error("oom"),
                      devices=["cpu"], rng=random.Random())
    assert decision.give_up


def test_skip_and_fail_end_the_step_without_spending_retries():
    state = AttemptState("s", device="cpu")
    [skip] = run_failures(policy({"user_error": ["skip"]}, retries=0), state, ["user_error"])
    assert skip.skip and not skip.give_up
    [fail] = run_failures(policy({"user_error": ["fail"]}), AttemptState("s"), ["user_error"])
    assert fail.give_up and not fail.skip


def test_chain_past_its_end_is_plain_retries():
    state = AttemptState("s", device="cpu")
    decisions = run_failures(policy({"transient": ["clear_cache"]}, retries=3), state,
                             ["transient"] * 3)
    assert [d.action for d in decisions] == ["clear_cache", "retry", "retry"]
    assert decisions[0].clear_cache and not decisions[1].clear_cache


def test_chains_advance_per_error_class():
    state = AttemptState("s", params={"batch_size": 8}, device="cuda:0")
    pol = policy({"oom": ["halve_batch"], "transient": ["restart_worker", "clear_cache"]},
                 retries=9)
    actions = [d.action for d in run_failures(pol, state, ["transient", "oom", "transient"])]
    assert actions == ["restart_worker", "halve_batch", "clear_cache"]


@pytest.mark.parametrize("cls", ["timeout", "hang", "worker_lost", "cuda_error"])
def test_dead_or_poisoned_worker_is_always_restarted(cls):
    decision = decide(policy({cls: ["retry"]}), AttemptState("s"), error(cls),
                      devices=["cpu"], rng=random.Random())
    assert decision.action == "retry" and decision.restart_worker


def test_delay_follows_backoff_of_retries_used():
    pol = effective_policy(None, {"backoff": {"initial": 1, "max": 3, "factor": 2,
                                              "jitter": 0}, "retries": 5}, "cpu")
    decisions = run_failures(pol, AttemptState("s", device="cpu"), ["unknown"] * 4)
    assert [d.delay for d in decisions] == [1, 2, 3, 3]


def test_step_moves_off_a_device_whose_breaker_opened():
    state = AttemptState("s", device="cuda:0")
    decision = decide(policy({"transient": ["retry"]}), state, error("transient"),
                      devices=["cuda:1", "cpu"], rng=random.Random())
    assert decision.device == "cuda:1" and decision.changes == {"device": ["cuda:0", "cuda:1"]}


def test_decide_does_not_mutate_state():
    state = AttemptState("s", params={"batch_size": 4}, device="cuda:0")
    before = repr(state)
    decide(default_policy("cuda"), state, error("oom", "cuda:0"), devices=["cuda:0", "cuda:1"],
           rng=random.Random())
    assert repr(state) == before


def test_default_cuda_oom_chain_end_to_end():
    state = AttemptState("s", params={"batch_size": 2, "precision": "bf16"}, device="cuda:0")
    pol = effective_policy(None, {"retries": 10}, "cuda")
    decisions = run_failures(pol, state, ["oom"] * 7, devices=("cuda:0", "cuda:1"))
    # a step allowed only on GPUs passes over the chain's `cpu` (issue 11.3: a contract)
    assert [d.action for d in decisions] == ["clear_cache", "halve_batch", "lower_precision",
                                             "next_device", "retry", "retry", "retry"]
    assert state.params == {"batch_size": 1, "precision": "int8"} and state.device == "cuda:1"
    assert state.failed_devices == {"cuda:0"}


@settings(max_examples=300)
@given(classes=st.lists(st.sampled_from(ERROR_CLASSES), min_size=1, max_size=15),
       chain=st.lists(st.sampled_from(RECOVERY_ACTIONS), max_size=6),
       retries=st.integers(0, 6), batch=st.integers(1, 512),
       devices=st.lists(st.sampled_from(["cuda:0", "cuda:1", "cuda:2", "cpu"]), unique=True),
       seed=st.integers(0, 1000))
def test_any_failure_sequence_keeps_the_invariants(classes, chain, retries, batch, devices, seed):
    pol = effective_policy(None, {"retries": retries,
                                  "on": {cls: chain for cls in set(classes)}}, "cuda")
    state = AttemptState("s", params={"batch_size": batch, "precision": "fp32"}, device="cuda:0")
    recoveries = 0
    for cls in classes:
        err = error(cls, state.device)
        decision = decide(pol, state, err, devices=devices, rng=random.Random(seed))
        assert decision.params.get("batch_size", 1) >= 1
        assert decision.device in (None, "cpu", *devices)
        assert decision.delay >= 0
        if cls in NEVER_RETRIED:
            assert decision.give_up
        state.advance(err, decision)
        if not decision.another_attempt:
            break
        recoveries += 1
    assert recoveries <= retries and state.retries_used == recoveries


def test_public_names_are_complete_and_importable():
    import inspect

    import maml.runtime.policies as policies

    for name in policies.__all__:          # the package loads its submodules on first use
        getattr(policies, name)
    assert sorted(policies.__all__) == sorted(
        name for name, value in vars(policies).items()
        if not name.startswith("_") and not inspect.ismodule(value))
    assert all(hasattr(policies, name) for name in policies.__all__)


# -- the one error-class table ------------------------------------------------------------

def test_every_error_fact_is_a_view_of_the_one_table():
    from maml import vocabulary as v
    from maml.runtime.policies import WORKER_FATAL

    assert v.ERROR_CLASSES == tuple(v.ERRORS)
    assert WORKER_FATAL is v.WORKER_FATAL
    for name, entry in v.ERRORS.items():
        assert (name in v.NEVER_RETRIED, name in v.WORKER_FATAL, name in v.DEVICE_ERRORS,
                name in v.INJECTABLE_ERRORS) == (entry.never_retried, entry.kills_worker,
                                                 entry.device_fault, entry.injectable)
        for hardware in v.HARDWARE_CLASSES:
            assert default_policy(hardware).on[name] == entry.chain(hardware)


def _rows(error_class: str, device_class: str, count: int = 3):
    from maml.graph.index import ErrorRow

    device = "cuda:0" if device_class == "cuda" else "cpu"
    return [ErrorRow(i, f"run{i}", "s", "python", error_class, "X", device, device_class,
                     "w1", False, float(i)) for i in range(count)]


@pytest.mark.parametrize("hardware", ["cuda", "cpu"])
@pytest.mark.parametrize("error_class", ERROR_CLASSES)
def test_graph_patterns_recommend_what_the_engine_does_first(hardware, error_class):
    """With no recovery observed yet, `maml graph patterns` recommends the first action the
    engine's default policy takes for that failure on that hardware."""
    from types import SimpleNamespace

    from maml.graph.patterns import find_patterns

    index = SimpleNamespace(errors=_rows(error_class, hardware), recoveries=[],
                            recovery_result={})
    found = {p["type"]: p for p in find_patterns(index)}
    engine_first = default_policy(hardware).on[error_class][0]
    assert found["error_class"]["recommended_action"] == engine_first


def test_user_errors_are_not_retried_by_default_but_a_policy_may_ask():
    state = AttemptState("s", device="cpu")
    assert decide(default_policy("cpu"), state, error("user_error", "cpu"), devices=["cpu"],
                  rng=random.Random(0)).give_up
    retrying = policy({"user_error": ["retry"]}, "cpu")
    assert decide(retrying, AttemptState("s", device="cpu"), error("user_error", "cpu"),
                  devices=["cpu"], rng=random.Random(0)).another_attempt


def test_on_the_cpu_two_ooms_take_batch_64_to_16():
    state = AttemptState("s", params={"batch_size": 64}, device="cpu")
    run_failures(default_policy("cpu"), state, ["oom", "oom"], devices=("cpu",))
    assert state.params == {"batch_size": 16} and state.attempt == 3


def test_halve_batch_from_past_the_item_count_jumps_below_it():
    state = AttemptState("s", params={"batch_size": 1_000_000}, device="cpu", items=24_576)
    decisions = run_failures(default_policy("cpu"), state, ["oom", "oom"], devices=("cpu",))
    assert [d.changes for d in decisions] == [{"batch_size": [1_000_000, 16_384]},
                                              {"batch_size": [16_384, 8_192]}]


@given(batch=st.integers(1, 10**7), items=st.integers(1, 10**6))
def test_every_halving_shrinks_the_effective_batch(batch, items):
    """An OOM retried with the same effective batch (min of batch and items) is wasted."""
    state = AttemptState("s", params={"batch_size": batch}, device="cpu", items=items)
    decision = run_failures(default_policy("cpu"), state, ["oom"], devices=("cpu",))[0]
    if min(batch, items) > 1:
        assert min(state.params["batch_size"], items) < min(batch, items)
        assert state.params["batch_size"] >= 1
    else:
        assert decision.action == "retry"       # nothing left to halve: past the chain
