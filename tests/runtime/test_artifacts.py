"""The data plane's encoder and decoder: arrays out as content-addressed .npy, back as
read-only memory maps; what is refused, with the path inside the output."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from maml.runtime import artifacts
from maml.runtime.artifacts import ArtifactError, OutputError, decode, encode_output


def _roundtrip(value, run_dir):
    text, refs = encode_output(value, run_dir, "prod")
    return json.loads(text), refs, decode(json.loads(text), run_dir, "prod")


@settings(max_examples=25)
@given(array=hnp.arrays(dtype=hnp.scalar_dtypes(), shape=hnp.array_shapes(min_dims=0, max_dims=3)),
       fortran=st.booleans())
def test_any_plain_array_round_trips_bit_for_bit(tmp_path_factory, array, fortran):
    run_dir = tmp_path_factory.mktemp("run")
    if fortran:
        array = np.asfortranarray(array)
    ref, refs, back = _roundtrip({"a": [array]}, run_dir)
    assert refs == [ref["a"][0]] and ref["a"][0]["shape"] == list(array.shape)
    got = back["a"][0]
    assert got.dtype == array.dtype and got.tobytes() == np.ascontiguousarray(array).tobytes()
    path = run_dir / ref["a"][0]["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref["a"][0]["$artifact"]
    assert path.stat().st_size == ref["a"][0]["bytes"]
    np.testing.assert_array_equal(np.load(path), array)   # a plain .npy numpy reads itself


def test_consumers_get_read_only_memory_maps_and_nothing_is_pickled(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    _, _, back = _roundtrip({"x": array, "n": np.int64(7), "f": np.float32(0.5)}, tmp_path)
    assert isinstance(back["x"], np.memmap) and not back["x"].flags.writeable
    with pytest.raises(ValueError):
        back["x"][0, 0] = 1.0
    assert back["n"] == 7 and type(back["n"]) is int and back["f"] == 0.5
    assert os.stat(back["x"].filename).st_mode & 0o777 == 0o444
    assert b"pickle" not in open(back["x"].filename, "rb").read(128)


def test_one_object_is_written_once_and_equal_arrays_share_a_file(tmp_path):
    array = np.ones(1000)
    text, refs = encode_output({"a": array, "b": array, "c": array.copy()}, tmp_path)
    assert len(refs) == 1 and json.loads(text)["a"] == json.loads(text)["c"]
    assert len(list((tmp_path / "artifacts").iterdir())) == 1


def test_torch_tensors_come_back_as_numpy_and_as_tensor_on_request(tmp_path):
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    _, refs, back = _roundtrip({"t": tensor, "g": tensor.float().requires_grad_()}, tmp_path)
    assert refs[0]["dtype"] == "float32"             # numpy has no bfloat16: exact upcast
    np.testing.assert_array_equal(back["t"], tensor.float().numpy())
    shared = artifacts.as_tensor(back["t"])
    shared += 1                                        # copy-on-write: the file is untouched
    np.testing.assert_array_equal(decode(json.loads(encode_output(
        {"t": tensor}, tmp_path)[0]), tmp_path)["t"], tensor.float().numpy())
    assert float(shared[0, 0]) == 1.0


@pytest.mark.parametrize("value, where", [
    ({"loss": float("nan")}, "output['loss'] is nan"),
    ({"m": [1.0, {"x": float("-inf")}]}, "output['m'][1]['x'] is -inf"),
    ({"s": np.float64("inf")}, "output['s'] is inf"),
    ({"o": np.array([{}, 1], dtype=object)}, "output['o']: an array of dtype object"),
    ({"k": object()}, "output['k'] is a builtins.object, which is not JSON-serialisable"),
    ({(1, 2): 3}, "key (1, 2) of type tuple"),
])
def test_what_json_cannot_hold_is_refused_naming_the_step_and_path(tmp_path, value, where):
    with pytest.raises(OutputError) as info:
        encode_output(value, tmp_path, "embed")
    assert str(info.value).startswith("step 'embed': ") and where in str(info.value)


def test_nan_inside_an_array_is_fine(tmp_path):
    _, _, back = _roundtrip([np.array([np.nan, np.inf])], tmp_path)
    assert np.isnan(back[0][0]) and np.isinf(back[0][1])


def test_lone_surrogates_become_replacement_characters(tmp_path):
    text, _ = encode_output({"caf\udce9": ["caf\udce9"]}, tmp_path)
    assert json.loads(text) == {"caf\ufffd": ["caf\ufffd"]}
    text.encode("utf-8")


def test_a_json_part_over_the_limit_suggests_an_array(tmp_path, monkeypatch):
    monkeypatch.setenv("MAML_MAX_JSON_OUTPUT", "1000")
    encode_output({"big": np.zeros(10_000)}, tmp_path)          # arrays do not count
    with pytest.raises(OutputError, match="over the 1,000-byte limit.*numpy array"):
        encode_output({"rows": [[0.5] * 100] * 10}, tmp_path, "s")


def test_missing_truncated_or_altered_artifacts_name_the_artifact_and_producer(tmp_path):
    text, [ref] = encode_output(np.arange(100.0), tmp_path)
    path = tmp_path / ref["path"]
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(data)                      # same size: only the full hash sees it
    artifacts.check(ref, tmp_path, full=False)
    with pytest.raises(ArtifactError, match=r"altered.*produced by step 'prod'"):
        artifacts.check(ref, tmp_path, full=True, producer="prod")
    path.write_bytes(data[:-8])
    with pytest.raises(ArtifactError, match="altered"):
        decode(json.loads(text), tmp_path, "prod")
    path.unlink()
    with pytest.raises(ArtifactError, match=r"missing.*produced by step 'prod'") as info:
        decode(json.loads(text), tmp_path, "prod")
    assert info.value.error_class == "invalid_input" and info.value.sha256 == ref["$artifact"]


def test_a_reference_names_a_file_only_through_its_hash(tmp_path):
    ref = {"$artifact": "0" * 64, "path": "../../etc/passwd", "bytes": 1}
    with pytest.raises(ArtifactError, match="missing"):
        decode(ref, tmp_path)
    assert artifacts.artifact_path(tmp_path, "0" * 64).parent == tmp_path / "artifacts"
    assert decode({"$artifact": "../x"}, tmp_path) == {"$artifact": "../x"}   # not a ref
