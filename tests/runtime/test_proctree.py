"""maml.runtime.proctree: what kill_tree finds, with and without the environment scan."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from maml.runtime import proctree

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process trees of Linux")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _start(token: str | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(proctree.TOKEN_VARIABLE, None)
    if token is not None:
        env[proctree.TOKEN_VARIABLE] = token
    return subprocess.Popen(SLEEPER, env=env, **kwargs)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_carrying_token_finds_exactly_the_processes_with_that_token():
    marked, other, plain = _start("tok-a"), _start("tok-a-longer"), _start()
    try:
        found = {p.pid for p in proctree.carrying_token("tok-a")}
        assert marked.pid in found
        assert other.pid not in found and plain.pid not in found
        assert os.getpid() not in found
    finally:
        for process in (marked, other, plain):
            process.kill()
            process.wait()


def test_a_dead_roots_orphans_are_found_by_their_token():
    orphan = _start("tok-dead-root", start_new_session=True)
    dead_root = _start()
    dead_root.kill()
    dead_root.wait()
    try:
        proctree.kill_tree(dead_root.pid, token="tok-dead-root")
        assert _gone(orphan.pid)
    finally:
        orphan.kill()
        orphan.wait()


def test_a_live_root_is_killed_with_its_children_without_scanning_every_environment(
        monkeypatch):
    def no_scan(token):
        raise AssertionError("the environment scan ran although the root lives")

    monkeypatch.setattr(proctree, "carrying_token", no_scan)
    root = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        child = int(root.stdout.readline())
        killed = proctree.kill_tree(root.pid, token="tok-live-root")
        assert any(name.startswith(f"{child} ") for name in killed)
        assert _gone(child)
        root.wait(timeout=10)
        assert root.returncode == -9
    finally:
        root.kill()
        root.wait()


def test_has_children_sees_a_living_child_and_a_zombie_and_reaps_neither():
    # in a fresh process: this one may hold other tests' workers and guardians
    script = (
        "import os, signal, subprocess, sys, time\n"
        "from maml.runtime import proctree\n"
        "print(proctree.has_children())\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(proctree.has_children())\n"
        "child.kill()\n"
        "while open(f'/proc/{child.pid}/stat').read().split(')')[1].split()[0] != 'Z':\n"
        "    time.sleep(0.01)\n"
        "print(proctree.has_children(), os.path.exists(f'/proc/{child.pid}'))\n"
        "child.wait()\n"
        "print(proctree.has_children())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")
    # none; a living child; a zombie (still a child, not reaped by the check); none again
    assert out[:4] == ["False", "True", "True True", "False"]
