"""effective_policy: step over document over the hardware class's defaults."""

import pytest

from maml.runtime.policies import DEFAULT_CHAINS, Policy, default_policy, effective_policy


def test_no_declarations_gives_the_hardware_class_defaults():
    cuda = effective_policy(None, None, "cuda")
    assert cuda == default_policy("cuda")
    assert cuda.on["oom"] == DEFAULT_CHAINS["cuda"]["oom"]
    assert effective_policy(None, None, "cpu").on["oom"] == ("halve_batch",)
    assert (cuda.retries, cuda.timeout, cuda.heartbeat_timeout) == (3, 600.0, 60.0)
    assert (cuda.max_errors, cuda.breaker_failures, cuda.breaker_cooldown) == (20, 3, 60.0)


def test_step_over_document_over_defaults():
    doc = {"retries": 5, "timeout": "2m", "on_exhausted": "skip",
           "backoff": {"initial": "1s", "max": "10s"},
           "on": {"oom": ["halve_batch", "cpu"], "transient": ["retry", "skip"]}}
    step = {"retries": 1, "backoff": {"initial": 0}, "on": {"oom": ["cpu"]}}
    pol = effective_policy(doc, step, "cuda")
    assert pol.retries == 1                      # step wins
    assert pol.timeout == 120.0                  # document wins over default
    assert pol.on_exhausted == "skip"
    assert (pol.backoff.initial, pol.backoff.max, pol.backoff.factor) == (0.0, 10.0, 2.0)
    assert pol.on["oom"] == ("cpu",)             # the step's chain replaces, never mixes
    assert pol.on["transient"] == ("retry", "skip")
    assert pol.on["cuda_error"] == DEFAULT_CHAINS["cuda"]["cuda_error"]


def test_policy_is_hashable_printable_and_serialisable():
    a = effective_policy({"retries": 2}, None, "cpu")
    b = effective_policy(None, {"retries": 2}, "cpu")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert "retries=2" in repr(a)
    assert a.to_dict()["on"]["oom"] == ["halve_batch"]
    assert a.to_dict()["backoff"] == {"initial": 0.5, "max": 30.0, "factor": 2.0, "jitter": 0.1}


def test_single_action_string_and_nested_breaker_and_no_timeout():
    pol = effective_policy({"on": {"hang": "skip"}, "breaker": {"failures": 5, "cooldown": "2m"},
                            "timeout": "none", "heartbeat_timeout": "30s"}, None, "gpu")
    assert pol.on["hang"] == ("skip",)
    assert (pol.breaker_failures, pol.breaker_cooldown) == (5, 120.0)
    assert pol.timeout is None and pol.heartbeat_timeout == 30.0


@pytest.mark.parametrize("declared,message", [
    ({"retries": -1}, "retries"),
    ({"retries": "three"}, "retries"),
    ({"retries": True}, "retries"),
    ({"timeout": "ten minutes"}, "timeout"),
    ({"backoff": {"initial": "fast"}}, "backoff.initial"),
    ({"backoff": {"factor": 0.5}}, "backoff.factor"),
    ({"backoff": {"speed": 1}}, "backoff.speed"),
    ({"on": {"oom": ["halve"]}}, r"on.oom\[0\]"),
    ({"on": {"oom": ["retry", 3]}}, r"on.oom\[1\]"),
    ({"on": {"gpu_melted": ["retry"]}}, "on.gpu_melted"),
    ({"on": ["retry"]}, "on"),
    ({"on_exhausted": "explode"}, "on_exhausted"),
    ({"max_errors": 2.5}, "max_errors"),
    ({"breaker": {"failures": 0}}, "breaker.failures"),
    ({"breaker": {"open": 1}}, "breaker.open"),
    ({"retires": 3}, "retires"),
])
def test_bad_values_raise_value_error_naming_level_and_key(declared, message):
    with pytest.raises(ValueError, match=f"^step policy: {message}"):
        effective_policy(None, declared, "cpu")
    with pytest.raises(ValueError, match=f"^document policy: {message}"):
        effective_policy(declared, None, "cpu")


def test_unknown_hardware_class_is_rejected():
    with pytest.raises(ValueError, match="tpu"):
        effective_policy(None, None, "tpu")


def test_policy_constructed_directly_is_validated():
    with pytest.raises(ValueError, match="on_exhausted"):
        Policy(on_exhausted="sometimes")
