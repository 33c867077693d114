"""classify/describe with real exceptions raised by real libraries.

torch is imported only in a child process (TORCH_CASES): importing it here would leave it in
sys.modules for every later test, and other tests check that maml never imports it.
"""

import errno
import importlib
import json
import socket
import subprocess
import sys

import jsonschema
import pytest

from maml.errors import InvalidInput, MissingDependency, OutOfMemory, require
from maml.runtime.classify import (CUDA_ERROR_MARKERS, CUDA_OOM_MARKERS, ERROR_CLASSES, classify,
                                   describe, headline, locate, synthetic_error)
from maml.runtime.events import DeviceRef
from maml.vocabulary import ERROR_CLASSES as VOCABULARY_CLASSES


def raised(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the point is to catch anything
        return exc
    raise AssertionError("did not raise")


def raise_(exc):
    raise exc


def test_error_classes_are_the_vocabulary():
    assert ERROR_CLASSES is VOCABULARY_CLASSES


TORCH_CASES = r"""
import json, torch
from maml.runtime.classify import classify, describe
from maml.runtime.events import DeviceRef

def raised(fn):
    try:
        fn()
    except BaseException as exc:
        return exc

def oom():
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

def accelerator():
    raise torch.AcceleratorError("CUDA error: unknown error")

def user_wraps_oom():
    try:
        oom()
    except torch.cuda.OutOfMemoryError as exc:
        raise ValueError("model did not fit") from exc

info = describe(raised(oom), injected=True, worker_id="w1", context={"attempt": 2},
                device=DeviceRef(id="cuda:0", kind="cuda", index=0))
print(json.dumps({
    "oom": [info.error_class, info.exception_type, info.message, info.device.id,
            "OutOfMemoryError" in info.traceback, info.injected, info.worker_id, info.context],
    "accelerator": classify(raised(accelerator)),
    "wrapped": classify(raised(user_wraps_oom)),
}))
"""


@pytest.fixture(scope="module")
def torch_results():
    done = subprocess.run([sys.executable, "-c", TORCH_CASES], capture_output=True, text=True,
                          timeout=240, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_real_torch_cuda_oom_is_oom_with_qualified_type(torch_results):
    error_class, exception_type, message, device, has_traceback, *_ = torch_results["oom"]
    assert (error_class, exception_type, device) == ("oom", "torch.OutOfMemoryError", "cuda:0")
    assert "Tried to allocate" in message and has_traceback


def test_real_torch_accelerator_error_is_cuda_error(torch_results):
    assert torch_results["accelerator"] == "cuda_error"


def test_user_code_wrapping_a_torch_oom_is_still_oom(torch_results):
    assert torch_results["wrapped"] == "oom"


def test_injected_flag_and_context_are_recorded_without_changing_the_class(torch_results):
    error_class, *_, injected, worker_id, context = torch_results["oom"]
    assert (error_class, injected, worker_id, context) == ("oom", True, "w1", {"attempt": 2})


def test_host_memory_error_is_oom():
    assert classify(raised(lambda: bytearray(2**62))) == "oom"


def test_cuda_runtime_errors_by_message():
    assert classify(raised(lambda: raise_(RuntimeError(
        "CUDA error: an illegal memory access was encountered")))) == "cuda_error"
    assert classify(raised(lambda: raise_(RuntimeError(
        "CUDA error: device-side assert triggered")))) == "cuda_error"
    assert classify(raised(lambda: raise_(RuntimeError(
        "CUDA out of memory. Tried to allocate 20.00 MiB")))) == "oom"


def test_real_connection_reset_from_a_socket_is_transient():
    left, right = socket.socketpair()
    right.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    left.sendall(b"x")
    right.close()   # linger 0 on a socket with unread data: the peer sees a reset / broken pipe

    def talk():
        for _ in range(100):
            left.sendall(b"y" * 65536)
            left.recv(1)

    exc = raised(talk)
    left.close()
    assert isinstance(exc, (ConnectionError, OSError))
    assert classify(exc) == "transient"


def test_timeouts_and_temporary_os_errors_are_transient():
    assert classify(raised(lambda: raise_(TimeoutError("timed out")))) == "transient"
    assert classify(OSError(errno.EAGAIN, "Resource temporarily unavailable")) == "transient"
    assert classify(OSError(errno.ENOENT, "No such file")) == "user_error"


def test_real_missing_module_is_dependency_missing():
    exc = raised(lambda: importlib.import_module("maml_no_such_module_xyz"))
    assert type(exc) is ModuleNotFoundError and classify(exc) == "dependency_missing"
    wrapped = raised(lambda: require("maml_no_such_module_xyz", "llm"))
    assert isinstance(wrapped, MissingDependency) and classify(wrapped) == "dependency_missing"


def test_real_permission_error_from_the_filesystem(tmp_path):
    locked = tmp_path / "locked"
    locked.write_text("x")
    locked.chmod(0)
    try:
        open(locked).read()
        # root reads anything; a read-only sysctl still refuses root
        exc = raised(lambda: open("/proc/sys/kernel/ostype", "w").write("x"))
    except PermissionError as denied:
        exc = denied
    assert isinstance(exc, PermissionError) and classify(exc) == "permission"


def test_jsonschema_validation_error_wrapped_as_invalid_input():
    def validate():
        try:
            jsonschema.validate({"shots": "many"}, {"properties": {"shots": {"type": "integer"}}})
        except jsonschema.ValidationError as exc:
            raise InvalidInput(f"input: {exc.message}") from exc

    exc = raised(validate)
    assert classify(exc) == "invalid_input"
    assert describe(exc).exception_type == "maml.errors.InvalidInput"
    bare = raised(lambda: jsonschema.validate(1, {"type": "string"}))
    assert classify(bare) == "invalid_input"


def test_user_code_errors_are_user_error():
    assert classify(raised(lambda: 1 / 0)) == "user_error"
    assert classify(raised(lambda: raise_(RuntimeError("my step broke")))) == "user_error"

    def user_wraps_host_oom():
        try:
            bytearray(2**62)
        except MemoryError as oom:
            raise ValueError("data did not fit") from oom

    assert classify(raised(user_wraps_host_oom)) == "oom"


def test_step_failure_error_class_wins():
    assert classify(OutOfMemory("declared by a kind")) == "oom"


def test_keyboard_interrupt_is_unknown():
    assert classify(KeyboardInterrupt()) == "unknown"


def test_sys_exit_from_the_step_is_a_user_error_that_says_so():
    exc = raised(lambda: raise_(SystemExit(3)))       # raised from this (non-maml) file
    info = describe(exc)
    assert info.error_class == "user_error" and info.exception_type == "SystemExit"
    assert info.message == "the block called sys.exit(3)"
    assert describe(raised(lambda: raise_(SystemExit(0)))).message == \
        "the block called sys.exit(0)"


def test_locate_and_headline_name_the_document_line():
    namespace = {}
    exc = raised(lambda: exec(compile("\n" * 12 + "records = {}['records']\n",
                                      "doc.maml.md", "exec"), namespace))
    info = describe(exc, context={"location": locate(exc, "doc.maml.md")})
    assert info.context["location"] == {"path": "doc.maml.md", "line": 13, "in": "block load"}
    assert headline(info) == "KeyError: 'records' at doc.maml.md:13 (block load)"
    assert locate(exc, "other.maml.md") is None


def test_the_cuda_marker_list_is_the_one_classify_uses():
    for marker in CUDA_ERROR_MARKERS:
        assert classify(RuntimeError(f"x {marker.upper()} y")) in ("cuda_error", "oom")
    for marker in CUDA_OOM_MARKERS:
        assert classify(RuntimeError(marker)) == "oom"


def fail_here(n):
    raise RuntimeError(f"bad value {n} at 0x{id(n):x}")


def fail_elsewhere(n):
    return [][n]


def test_traceback_digest_is_stable_across_raises_and_differs_across_code():
    first, second = describe(raised(lambda: fail_here(1))), describe(raised(lambda: fail_here(2)))
    other = describe(raised(lambda: fail_elsewhere(1)))
    assert first.traceback_digest == second.traceback_digest
    assert first.traceback_digest != other.traceback_digest
    assert len(first.traceback_digest) == 64 and first.message != second.message


def test_synthetic_errors_for_the_watchdog():
    a = synthetic_error("hang", "no heartbeat for 61.2 s", worker_id="w3", signal=9)
    b = synthetic_error("hang", "no heartbeat for 75.0 s")
    assert (a.error_class, a.exception_type, a.worker_id) == ("hang", "maml.HeartbeatLost", "w3")
    assert a.context == {"signal": 9} and a.traceback_digest == b.traceback_digest
    assert synthetic_error("timeout", "x").traceback_digest != a.traceback_digest
    with pytest.raises(ValueError, match="gpu_fire"):
        synthetic_error("gpu_fire", "x")


def test_failure_inside_maml_alone_is_unknown_not_user_error():
    import os

    import maml

    # code whose every frame is in the maml package, caught there: a maml bug, not the step's
    inside = os.path.join(os.path.dirname(maml.__file__), "runtime", "internal.py")
    namespace = {}
    exec(compile("def f():\n    try:\n        {}['missing']\n    except KeyError as e:\n"
                 "        return e\n", inside, "exec"), namespace)
    assert classify(namespace["f"]()) == "unknown"
