"""Process trees: what an attempt starts dies with it.

A worker runs in its own session (`os.setsid`), so its process group holds the worker and
every child a step starts without asking for a group of its own. A daemon that double-forks
and calls `setsid` leaves that group; two nets catch it anyway:

- the worker is a *child subreaper* (`PR_SET_CHILD_SUBREAPER`): an orphaned descendant is
  re-parented to the worker instead of to init, so it stays in the worker's process tree,
  where `descendants()` finds it;
- every worker exports a token in its environment (`MAML_WORKER_TOKEN`), inherited by all
  it starts; when the worker is already gone, `kill_tree` kills any process whose
  environment carries it, which finds descendants orphaned after the worker died (SIGKILL
  gives it no chance). While the worker lives the tree is complete (it is their subreaper),
  so the scan of every process's environment (~1 ms per 100 processes) is skipped.

A *guardian* (`start_guardian`), one small process per maml process, covers the one case
those nets cannot: maml itself killed (SIGKILL, an unhandled SIGTERM). Its workers die with
it (PR_SET_PDEATHSIG), and their children are orphaned to init; the guardian holds the read
end of a pipe only maml writes to, and at its EOF (maml gone, however it went) it kills every
process carrying one of this maml process's worker tokens.

`kill_tree` stops every process first (SIGSTOP: a stopped process cannot fork), re-reads
the tree until it holds still, then SIGKILLs them all. cgroups would be exact, but are not
available to an unprivileged process on most hosts this runs on.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from typing import Any

from maml._lazy import lazy_module

#: loaded at its first use: a worker imports this module at start-up and most never kill
psutil = lazy_module("psutil")

TOKEN_VARIABLE = "MAML_WORKER_TOKEN"
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> bool:
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent thread dies.

    Used as `preexec_fn` for a step's subprocess and at worker start: if the process above
    is SIGKILLed it cannot kill us itself. When the parent died before the call took effect,
    die now (the death signal would never come).
    """
    parent = os.getppid()
    if _prctl(_PR_SET_PDEATHSIG, sig) and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux >= 3.4); False if not."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def descendants(pid: int) -> list[psutil.Process]:
    """Every living process below `pid`, children first; [] when `pid` is gone."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def has_children() -> bool:
    """Whether this process (any of its threads) has a child now, living or a zombie.
    One waitid(P_ALL, WNOHANG | WNOWAIT) where there is one: it reaps nothing, and fails
    with ECHILD exactly when there is no child. Else each thread's
    /proc/self/task/<tid>/children, kept open and re-read with pread."""
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            return True
        except ChildProcessError:
            return False
        except OSError:
            pass
    try:
        tasks = set(os.listdir("/proc/self/task"))
    except OSError:
        return bool(descendants(os.getpid()))
    for tid in [t for t in _CHILDREN_FDS if t not in tasks]:
        os.close(_CHILDREN_FDS.pop(tid))          # the thread ended
    for tid in tasks:
        try:
            if tid not in _CHILDREN_FDS:
                _CHILDREN_FDS[tid] = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY)
            if os.pread(_CHILDREN_FDS[tid], 16, 0).strip():
                return True
        except FileNotFoundError:
            continue                               # the thread ended meanwhile
        except OSError:
            return bool(descendants(os.getpid()))  # no CONFIG_PROC_CHILDREN: ask psutil
    return False


_CHILDREN_FDS: dict[str, int] = {}


def carrying_token(token: str) -> list[psutil.Process]:
    """Processes of this user whose environment holds TOKEN_VARIABLE=`token`.

    Reads /proc/<pid>/environ as bytes where there is a /proc (psutil parses each one into
    a dict: ~40 ms a scan on a desktop's few hundred processes), else asks psutil."""
    if not os.path.isdir("/proc/self"):
        return _carrying_token_psutil(token)
    needle = f"\0{TOKEN_VARIABLE}={token}\0".encode()
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                if needle in b"\0" + environ.read() + b"\0":
                    found.append(psutil.Process(int(name)))
        except (OSError, psutil.Error):
            continue                      # gone, another user's, or a kernel thread
    return found


def _carrying_token_psutil(token: str) -> list[psutil.Process]:
    found = []
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.environ().get(TOKEN_VARIABLE) == token:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def kill_tree(root: int | None, *, token: str | None = None,
              include_root: bool = True) -> list[str]:
    """SIGKILL `root` (if `include_root`) and every process below it or carrying `token`.

    Returns "pid (name)" for each process killed other than the root, for the step's log.
    Never raises for processes that are already gone.
    """
    frozen: dict[int, psutil.Process] = {}
    for _ in range(20):                       # until a pass finds nothing new
        found = [p for p in _tree(root, token, include_root) if p.pid not in frozen]
        if not found:
            break
        for process in found:
            frozen[process.pid] = process
            _signal(process, signal.SIGSTOP)
    names = [f"{p.pid} ({_name(p)})" for p in frozen.values() if p.pid != root]
    for process in frozen.values():
        _signal(process, signal.SIGKILL)
    _reap(pid for pid in frozen if pid != root)   # the root's owner reaps it (its exit code)
    return names


def _tree(root: int | None, token: str | None, include_root: bool) -> list[psutil.Process]:
    processes: list[psutil.Process] = []
    root_lives = root is not None and _status_of(root) not in (None, psutil.STATUS_ZOMBIE)
    if root is not None:
        if include_root and root_lives:
            processes += _process(root)
        processes += descendants(root)
    # a live worker is its descendants' subreaper (Linux): its tree already holds them all
    if token is not None and not (root_lives and sys.platform == "linux"):
        processes += carrying_token(token)
    return [p for p in processes if _status(p) != psutil.STATUS_ZOMBIE]


def _process(pid: int) -> list[psutil.Process]:
    try:
        return [psutil.Process(pid)]
    except psutil.NoSuchProcess:
        return []


def _status_of(pid: int) -> str | None:
    try:
        return psutil.Process(pid).status()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _status(process: psutil.Process) -> str:
    try:
        return process.status()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return psutil.STATUS_ZOMBIE


def _name(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:80] or process.name()
    except (psutil.Error, OSError):
        return "?"


def _signal(process: psutil.Process, sig: int) -> None:
    try:
        process.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        pass


def _reap(pids: Iterable[int]) -> None:
    """Collect the ones that are our children (a subreaper's orphans among them)."""
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass                               # not ours: its parent (or init) reaps it
        except OSError:
            pass


def reap_orphans(known: Iterable[int] = ()) -> None:
    """Reap zombie children that nobody waits for (re-parented orphans of a subreaper)."""
    skip = set(known)
    for child in descendants(os.getpid()):
        if child.pid not in skip and _status(child) == psutil.STATUS_ZOMBIE:
            try:
                os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                pass


#: the guardian's program: wait for EOF on stdin, then kill every process whose environment
#: has TOKEN_VARIABLE starting with argv[1]; no imports beyond os/signal/sys (it starts fast)
_GUARDIAN = r"""
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
needle = b"\0%s=%s" % (sys.argv[1].encode(), sys.argv[2].encode())
while os.read(0, 4096):
    pass
for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGKILL):
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open("/proc/%s/environ" % pid, "rb") as environ:
                if needle in b"\0" + environ.read():
                    os.kill(int(pid), sig)
        except OSError:
            pass
"""
_GUARDIANS: dict[int, Any] = {}


def start_guardian(prefix: str) -> None:
    """Start (once per process) the guardian that kills processes whose token starts with
    `prefix` when this process ends. Costs one fork+exec, off the critical path."""
    if sys.platform != "linux" or os.getpid() in _GUARDIANS:
        return
    import subprocess

    read, write = os.pipe()
    try:
        subprocess.Popen([sys.executable, "-S", "-c", _GUARDIAN, TOKEN_VARIABLE, prefix],
                         stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, close_fds=True)
    except OSError:
        os.close(write)
        return
    finally:
        os.close(read)
    _GUARDIANS[os.getpid()] = write        # held open until this process ends
