"""Choosing the executor: command line over front matter over $MAML_EXECUTOR, `auto`."""

from __future__ import annotations

import pytest

from maml.errors import UsageError
from maml.runtime.executors.select import ExecutorChoice, choose_executor


def test_auto_is_ray_only_when_a_cluster_is_named():
    assert choose_executor(env={}) == ExecutorChoice("local")
    assert choose_executor(env={"RAY_ADDRESS": "10.0.0.1:6379"}) == ExecutorChoice(
        "ray", "10.0.0.1:6379")
    assert choose_executor("auto", env={}) == ExecutorChoice("local")


def test_the_command_line_beats_the_front_matter_and_the_environment():
    front = {"kind": "ray", "address": "head:6379", "gpu_resource": "GPU"}
    assert choose_executor("local", declared=front, env={}) == ExecutorChoice("local")
    assert choose_executor(None, "other:6379", front, env={}) == ExecutorChoice(
        "ray", "other:6379", {"gpu_resource": "GPU"})
    assert choose_executor(declared="ray", env={"MAML_EXECUTOR": "local"}).kind == "ray"
    assert choose_executor(env={"MAML_EXECUTOR": "ray"}) == ExecutorChoice("ray")


def test_an_address_alone_means_ray():
    assert choose_executor(address="ray://head:10001", env={}) == ExecutorChoice(
        "ray", "ray://head:10001")


@pytest.mark.parametrize("flag, declared, words", [
    ("slurm", None, "unknown executor 'slurm'"),
    (None, {"kind": "ray", "nodes": 3}, "unknown key(s) nodes"),
    (None, 7, "executor: must be local, ray, auto or a mapping"),
])
def test_bad_values_say_what_is_allowed(flag, declared, words):
    with pytest.raises(UsageError) as caught:
        choose_executor(flag, declared=declared, env={})
    assert words in str(caught.value)


@pytest.mark.parametrize("make, outcome, error_class", [
    (lambda r: r.OutOfMemoryError("Task was killed due to the node running low on memory."),
     "failed", "oom"),
    (lambda r: r.ActorDiedError(), "lost", "worker_lost"),
    (lambda r: r.NodeDiedError("node 3f2a died"), "lost", "worker_lost"),
    (lambda r: r.ObjectLostError("0" * 56, "owner", "call"), "failed", "transient"),
    (lambda r: r.ActorUnavailableError("unavailable", None), "failed", "transient"),
    (lambda r: r.GetTimeoutError("timed out"), "failed", "device_unavailable"),
    (lambda r: ConnectionError("GCS unreachable"), "failed", "device_unavailable"),
])
def test_failures_ray_adds_are_classified(make, outcome, error_class):
    ray_exceptions = pytest.importorskip("ray.exceptions")
    from maml.runtime.executors._ray_actor import ray_failure

    got = ray_failure(make(ray_exceptions))
    assert got[:2] == (outcome, error_class)
    assert got[3]["ray_error"]


def test_an_actor_the_memory_monitor_killed_is_oom_not_worker_lost():
    ray_exceptions = pytest.importorskip("ray.exceptions")
    from maml.runtime.executors._ray_actor import ray_failure

    class Died(ray_exceptions.ActorDiedError):
        def __str__(self) -> str:
            return ("The actor is dead because its worker process has died. Task was killed "
                    "due to the node running low on memory.")

    assert ray_failure(Died())[:2] == ("failed", "oom")


def test_workers_per_gpu_comes_from_the_backend_or_the_front_matter():
    from maml.runtime.executors.select import workers_per_gpu

    assert workers_per_gpu(None) == 1
    assert workers_per_gpu({"workers_per_gpu": 3}) == 3

    class Backend:
        workers_per_gpu = 2

    assert workers_per_gpu({"workers_per_gpu": 3}, Backend()) == 2
    with pytest.raises(UsageError, match="whole number"):
        workers_per_gpu({"workers_per_gpu": 0})
