"""Helpers for the kind tests: a real StepContext, a step factory, a tiny local LLM.

`Context` is a plain implementation of the StepContext protocol (what a worker gives a
kind), recording heartbeats, progress and log lines so tests can assert on them. The tiny
model is a randomly initialised 2-layer Llama with a word-level tokenizer trained on a few
sentences, saved with save_pretrained: real Transformers loading, no hub.
"""

from __future__ import annotations

import tempfile

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from maml.runtime.kinds.base import StepSpec

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "quantum circuits entangle qubits",
    "a gpu runs out of memory when the batch is too large",
    "edges and blurs on video frames",
    "markdown documents describe pipelines",
]


@dataclass
class Context:
    step_id: str = "step"
    attempt: int = 1
    device: str = "cpu"
    params: dict[str, Any] = field(default_factory=dict)
    run_dir: str = "."
    cache: dict[str, Any] = field(default_factory=dict)
    heartbeats: int = 0
    progress_calls: list[tuple[int, int | None, str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    saved: Any = None

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def progress(self, done: int, total: int | None = None, unit: str = "") -> None:
        self.progress_calls.append((done, total, unit))

    def log(self, message: str) -> None:
        self.logs.append(message)

    def checkpoint(self, state: Any) -> None:
        self.saved = state

    def restore(self) -> Any | None:
        return self.saved


@pytest.fixture
def make_ctx(tmp_path: Path):
    def make(params: dict[str, Any] | None = None, **kw: Any) -> Context:
        return Context(params=dict(params or {}), run_dir=str(tmp_path), **kw)
    return make


def step_spec(kind: str, params: dict[str, Any] | None = None, *, doc_dir: str = ".",
              **kw: Any) -> StepSpec:
    # kinds check paths again where they open them (StepSpec.path): these tests hand them
    # models and clips under the temp dir, as `maml run --allow-path` would allow
    return StepSpec(id=kw.pop("id", "s1"), kind=kind, params=dict(params or {}),
                    doc_path=kw.pop("doc_path", "doc.maml.md"), doc_dir=doc_dir,
                    block_line=kw.pop("block_line", 7),
                    path_roots=kw.pop("path_roots", (tempfile.gettempdir(),)), **kw)


@pytest.fixture
def make_step():
    return step_spec


def build_tiny_llama(directory: Path) -> Path:
    """Save a random 2-layer Llama and a word-level tokenizer under `directory`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(
        special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]",
                                        pad_token="[PAD]", bos_token="[BOS]",
                                        eos_token="[EOS]")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=raw.get_vocab_size(), hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
