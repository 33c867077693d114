"""Circuit breaker and error budget, with a fake clock."""

import threading

import pytest

from maml.runtime.policies import CircuitBreaker, ErrorBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(failures=3, cooldown=60.0):
    clock = FakeClock()
    return CircuitBreaker(failures=failures, cooldown=cooldown, clock=clock), clock


def test_opens_after_consecutive_failures_only():
    breaker, _ = make()
    breaker.record_failure("cuda:0")
    breaker.record_failure("cuda:0")
    breaker.record_success("cuda:0")        # resets the run of failures
    breaker.record_failure("cuda:0")
    breaker.record_failure("cuda:0")
    assert not breaker.is_open("cuda:0")
    breaker.record_failure("cuda:0")
    assert breaker.is_open("cuda:0") and breaker.state("cuda:0") == "open"
    assert not breaker.is_open("cuda:1")    # per device


def test_half_open_after_cooldown_gives_exactly_one_trial():
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure("cuda:0")
    clock.now += 59.9
    assert breaker.is_open("cuda:0")
    clock.now += 0.2
    assert breaker.state("cuda:0") == "half_open"
    assert breaker.is_open("cuda:0") is False     # the trial
    assert breaker.is_open("cuda:0") is True      # only one
    breaker.record_success("cuda:0")
    assert breaker.state("cuda:0") == "closed" and not breaker.is_open("cuda:0")


def test_failed_trial_reopens_for_a_full_cooldown():
    breaker, clock = make(failures=1, cooldown=10)
    breaker.record_failure("cuda:0")
    clock.now += 10
    assert not breaker.is_open("cuda:0")
    breaker.record_failure("cuda:0")
    clock.now += 9
    assert breaker.is_open("cuda:0")
    clock.now += 1
    assert not breaker.is_open("cuda:0")


def test_unreported_trial_expires_after_another_cooldown():
    breaker, clock = make(failures=1, cooldown=10)
    breaker.record_failure("cpu")
    clock.now += 10
    assert not breaker.is_open("cpu")       # trial handed out, never reported
    clock.now += 5
    assert breaker.is_open("cpu")
    clock.now += 5
    assert not breaker.is_open("cpu")


def test_state_reading_hands_out_no_trial():
    breaker, clock = make(failures=1, cooldown=1)
    breaker.record_failure("cuda:0")
    clock.now += 1
    assert [breaker.state("cuda:0") for _ in range(3)] == ["half_open"] * 3
    assert breaker.is_open("cuda:0") is False


def test_error_budget_tolerates_max_errors_then_refuses():
    budget = ErrorBudget(3)
    assert [budget.spend() for _ in range(5)] == [True, True, True, False, False]
    assert budget.spent == 5 and budget.remaining == 0 and budget.exhausted


def test_error_budget_zero_refuses_the_first_error():
    assert ErrorBudget(0).spend() is False


def test_error_budget_counts_exactly_under_threads():
    budget = ErrorBudget(1000)
    threads = [threading.Thread(target=lambda: [budget.spend() for _ in range(500)])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.spent == 2000 and budget.exhausted


@pytest.mark.parametrize("bad", [0, -1])
def test_breaker_rejects_fewer_than_one_failure(bad):
    with pytest.raises(ValueError, match="at least 1"):
        CircuitBreaker(failures=bad)
