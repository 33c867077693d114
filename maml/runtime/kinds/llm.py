"""The `llm` step kind: batched generation or embedding with PyTorch and Transformers.

Params (schemas/kinds/llm.json): `task` generate|embed, `model` (see _models.py: a local
directory, a .gguf file or an installed model package; never a hub download), `prompts`,
`batch_size`, `precision` fp32|bf16|fp16|int8, `max_new_tokens`, `do_sample`,
`temperature`, `top_p`, `seed`, `max_length`.

Prompts come from, in this order: `params.prompts`; the step's own fenced block (a JSON or
YAML list, or one prompt per non-empty line; `prompts_block` names that block, which the plan
hands over as the step's block); the outputs of the steps in `needs` (a string, a list of
strings, or a mapping with "prompts" or "texts").

What the policy changes, and why it helps: `batch_size` (halve_batch) bounds the activations
of one forward pass; `precision` (lower_precision) reloads the weights smaller, after
dropping the old copy; `ctx.device` (next_device/cpu) moves the whole step. A real CUDA OOM
is raised as OutOfMemory and a device-side assert as CudaFault (see _torch.py).

Output: generate -> {"texts", "tokens", ...}; embed -> {"embeddings": float32 array
(count, dim), "dim", ...} (the array travels as an artifact, maml.runtime.artifacts), both with
"batch_size", "precision", "device", "model" and "count".
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from maml.errors import InvalidInput, require
from maml.runtime.kinds._models import load_model, release_models, resolve_model
from maml.runtime.kinds._torch import location, torch_device, torch_failures
from maml.runtime.kinds.base import Kind, StepContext, StepSpec

TASKS = ("generate", "embed")
DEFAULTS: dict[str, Any] = {"task": "generate", "batch_size": 8, "precision": "fp32",
                            "max_new_tokens": 32, "do_sample": False, "temperature": 1.0,
                            "top_p": 1.0, "seed": 0, "max_length": 512}


class LLMKind(Kind):
    name: ClassVar[str] = "llm"
    params_schema: ClassVar[str] = "llm.json"
    device_classes: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    executes_code: ClassVar[bool] = False
    path_params: ClassVar[tuple[str, ...]] = ("model",)

    @classmethod
    def reads(cls, step: StepSpec) -> list[str]:
        """The model's files: new weights under the same name change the cache key."""
        try:
            return [resolve_model(str(step.params.get("model")), step, where={}).describe()]
        except Exception:  # noqa: BLE001 - an unresolvable model fails the step, not the key
            return []

    def run(self, ctx: StepContext, step: StepSpec) -> dict[str, Any]:
        where = location(step)
        params = {**DEFAULTS, **step.params, **(ctx.params or {})}
        if params["task"] not in TASKS:
            raise InvalidInput(f"task {params['task']!r} is not one of {', '.join(TASKS)}",
                               **where)
        if not params.get("model"):
            raise InvalidInput("an llm step needs `model:` (a local directory, a .gguf file "
                               "or an installed model package)", **where)
        prompts = collect_prompts(params, step)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before transformers is first imported
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        torch = require("torch", "llm")
        require("transformers", "llm")
        device = torch_device(torch, ctx.device, where=where)
        ref = resolve_model(str(params["model"]), step, where=where)
        with torch_failures(torch, f"loading {ref.describe()} ({params['precision']})",
                            where=where):
            loaded = load_model(ctx.cache, ref, task=params["task"],
                                precision=params["precision"], device=device, where=where)
        from maml.runtime.kinds._tokens import token_cached   # kept across this step's attempts
        loaded = token_cached(loaded, step.id)
        batch_size = int(params["batch_size"])
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}", **where)
        work = generate if params["task"] == "generate" else embed
        ctx.progress(0, len(prompts), "prompts")   # the item count: halve_batch reads it
        with torch_failures(torch, f"running {params['task']} at batch_size {batch_size}",
                            where=where):
            result = work(torch, loaded, prompts, params, device, ctx)
        result.update(batch_size=batch_size, precision=params["precision"], device=ctx.device,
                      model=str(params["model"]), count=len(prompts))
        return result

    def release(self, ctx: StepContext) -> None:
        release_models(ctx.cache)


def collect_prompts(params: dict[str, Any], step: StepSpec) -> list[str]:
    """Every prompt of the step, in order (see module doc); InvalidInput when there is none."""
    prompts: list[str] = list(_strings(params.get("prompts") or [], "params.prompts", step))
    if step.block_body and step.block_lang not in ("python", "py"):
        prompts += _block_prompts(step.block_body, step)
    for name, output in (step.inputs or {}).items():
        prompts += _input_prompts(output, name, step)
    if not prompts:
        raise InvalidInput("no prompts: give params.prompts, a block of prompts, or a step in "
                           "`needs` whose output is text", **location(step))
    return prompts


def _block_prompts(body: str, step: StepSpec) -> list[str]:
    text = body.strip()
    if text.startswith("["):
        try:
            return _strings(json.loads(text), "the step's block", step)
        except json.JSONDecodeError:
            pass
    if text.startswith("- "):
        import yaml

        try:
            return _strings(yaml.safe_load(text), "the step's block", step)
        except yaml.YAMLError:
            pass
    return [line.strip() for line in text.splitlines() if line.strip()]


def _input_prompts(output: Any, name: str, step: StepSpec) -> list[str]:
    if isinstance(output, str):
        return [output]
    if isinstance(output, dict):
        for key in ("prompts", "texts"):
            if key in output:
                return _strings(output[key], f"output of step {name!r}[{key!r}]", step)
        raise InvalidInput(f"output of step {name!r} has no 'prompts' or 'texts' to use as "
                           "prompts", **location(step))
    return _strings(output, f"output of step {name!r}", step)


def _strings(value: Any, what: str, step: StepSpec) -> list[str]:
    if type(value).__module__ == "numpy" and getattr(value, "dtype", None) is not None \
            and value.dtype.kind == "U" and value.ndim == 1:     # an artifact of strings
        return [str(v) for v in value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"{what} must be a list of strings, not {type(value).__name__}",
                       **location(step))


def _batches(prompts: list[str], size: int) -> Any:
    for start in range(0, len(prompts), size):
        yield start, prompts[start:start + size]


def generate(torch: Any, loaded: Any, prompts: list[str], params: dict[str, Any],
             device: Any, ctx: StepContext) -> dict[str, Any]:
    """Greedy or seeded sampling, batch by batch; only the new tokens are decoded."""
    tokenizer, model = loaded.tokenizer, loaded.model
    torch.manual_seed(int(params["seed"]))
    options: dict[str, Any] = {"max_new_tokens": int(params["max_new_tokens"]),
                               "do_sample": bool(params["do_sample"]),
                               "pad_token_id": tokenizer.pad_token_id}
    if options["do_sample"]:
        options.update(temperature=float(params["temperature"]), top_p=float(params["top_p"]))
    texts: list[str] = []
    tokens = 0
    for start, batch in _batches(prompts, int(params["batch_size"])):
        ctx.heartbeat()
        encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                            max_length=int(params["max_length"])).to(device)
        with torch.inference_mode():
            out = model.generate(**encoded, **options)
        new = out[:, encoded["input_ids"].shape[1]:]
        tokens += int((new != tokenizer.pad_token_id).sum())
        texts += tokenizer.batch_decode(new, skip_special_tokens=True)
        del encoded, out, new
        ctx.progress(start + len(batch), len(prompts), "prompts")
    return {"texts": texts, "tokens": tokens}


def embed(torch: Any, loaded: Any, prompts: list[str], params: dict[str, Any],
          device: Any, ctx: StepContext) -> dict[str, Any]:
    """Mean of the last hidden states over real tokens, L2-normalised (sentence-transformers'
    recipe for all-MiniLM-L6-v2). `embeddings` is one float32 array (len(prompts), dim): it
    stays on the device until the end and leaves it in one copy; the data plane stores it as
    an artifact and the next step gets it memory-mapped, never as JSON."""
    tokenizer, model = loaded.tokenizer, loaded.model
    pieces: list[Any] = []
    for start, batch in _batches(prompts, int(params["batch_size"])):
        ctx.heartbeat()
        encoded = tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                            max_length=int(params["max_length"])).to(device)
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pieces.append(torch.nn.functional.normalize(pooled.float(), p=2, dim=1))
        del encoded, hidden, mask, pooled
        ctx.progress(start + len(batch), len(prompts), "texts")
    vectors = torch.cat(pieces).cpu().numpy()
    return {"embeddings": vectors, "dim": int(vectors.shape[1])}
