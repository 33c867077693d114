"""`maml devices` as a user runs it: this machine's real (CPU-only) state, and FakeNVML
through $MAML_FAKE_NVML for the GPU rows. In-process through `maml.cli.main(argv)`, with real
subprocesses for the CPU-only smoke test and --watch's Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GiB = 2**30


def maml_process(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("CUDA_VISIBLE_DEVICES", "MAML_FAKE_NVML")}
    full_env.update(env or {}, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "maml", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


@pytest.fixture
def maml(cli, monkeypatch):
    """`maml ARGS` in this process (tests/conftest.py's cli), with the environment a test
    gives and no GPU visibility or fake NVML inherited from the caller's."""
    def invoke(*args: str, env: dict[str, str] | None = None):
        for name in ("CUDA_VISIBLE_DEVICES", "MAML_FAKE_NVML"):
            monkeypatch.delenv(name, raising=False)
        return cli(*args, env={"COLUMNS": "160", **(env or {})})
    return invoke


@pytest.fixture
def fake_gpus(tmp_path: Path) -> dict[str, str]:
    spec = tmp_path / "gpus.json"
    spec.write_text(json.dumps({"gpus": [
        {"script": [{"temperature": 61, "utilization": 97, "memory_used": 40 * GiB,
                     "power_w": 512.0, "throttle": ["sw_power_cap"]}]},
        {"name": "NVIDIA A100-SXM4-40GB", "memory_total": 40 * GiB,
         "script": [{"temperature": 86, "memory_used": 10 * GiB}]},
    ]}))
    return {"MAML_FAKE_NVML": str(spec), "MAML_CONFIG_DIR": str(tmp_path)}


def test_cpu_only_machine_says_nvml_was_not_found_and_lists_the_cpu():
    done = maml_process("devices")          # a real process: this machine's state, no traceback
    assert done.returncode == 0, done.stderr
    assert "NVML not found" in done.stdout and "CPU only" in done.stdout
    cpu_row = next(line for line in done.stdout.splitlines() if line.startswith("cpu "))
    assert f"({len(os.sched_getaffinity(0))} cores)" in cpu_row
    assert "Traceback" not in done.stdout + done.stderr


def test_json_shape_on_a_cpu_only_machine(maml):
    done = maml("devices", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"source", "note", "devices"}
    assert report["source"] == "cpu-only" and report["note"].startswith("NVML not found")
    (cpu,) = report["devices"]
    assert cpu["id"] == "cpu" and cpu["kind"] == "cpu" and cpu["total_memory"] > 0
    assert 0 <= cpu["health"]["memory_used"] <= cpu["total_memory"]


def test_fake_gpus_show_health_in_table_and_json(maml, fake_gpus):
    table = maml("devices", env=fake_gpus)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("cuda:1"))
    assert "critical" in row and "86°C" in row and "temperature_critical" in row
    assert "cuda:1: temperature_critical: 86 °C >= 85 °C" in table.stdout
    report = json.loads(maml("devices", "--json", env=fake_gpus).stdout)
    assert [d["id"] for d in report["devices"]] == ["cpu", "cuda:0", "cuda:1"]
    first = report["devices"][1]
    assert first["state"] == "healthy" and first["health"]["utilization_gpu"] == 97
    assert first["health"]["throttle_reasons"] == ["sw_power_cap"]
    assert report["devices"][2]["state"] == "critical"


def test_config_thresholds_change_what_the_table_says(maml, fake_gpus, tmp_path):
    (tmp_path / "config.toml").write_text("[health]\ntemperature_warning = 55\n"
                                          "temperature_critical = 90\n")
    report = json.loads(maml("devices", "--json", env=fake_gpus).stdout)
    assert [d["state"] for d in report["devices"][1:]] == ["warning", "warning"]


def test_bad_config_is_one_line_naming_the_file(maml, fake_gpus, tmp_path):
    (tmp_path / "config.toml").write_text("[health]\ntemprature_warning = 55\n")
    done = maml("devices", env=fake_gpus)
    assert done.returncode == 2
    assert str(tmp_path / "config.toml") in done.stderr and "temprature_warning" in done.stderr
    assert "Traceback" not in done.stderr


def test_visibility_is_respected(maml, fake_gpus):
    report = json.loads(maml("devices", "--json", env={**fake_gpus,
                                                        "CUDA_VISIBLE_DEVICES": "1"}).stdout)
    assert [(d["id"], d["name"]) for d in report["devices"][1:]] == [
        ("cuda:0", "NVIDIA A100-SXM4-40GB")]
    assert "hides 1 of 2" in report["note"]


def _sigint_as_a_terminal_gives_it() -> None:
    """In the child, before exec: SIGINT at its default and unblocked, as a terminal gives
    it. A suite started in the background by a non-interactive shell (`pytest &`) runs with
    SIGINT ignored, every child inherits that, Python then never raises KeyboardInterrupt,
    and the watch never stopped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_watch_refreshes_until_ctrl_c(fake_gpus):
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(fake_gpus)
    proc = subprocess.Popen([sys.executable, "-m", "maml", "devices", "--watch", "0.2", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_as_a_terminal_gives_it)
    lines = []
    deadline = time.monotonic() + 60
    while len(lines) < 2 and time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert all(json.loads(line)["source"] == "fake" for line in lines)
    assert "Traceback" not in err


def test_watch_value_must_be_positive(maml):
    done = maml("devices", "--watch", "0")
    assert done.returncode == 2 and "Traceback" not in done.stderr
