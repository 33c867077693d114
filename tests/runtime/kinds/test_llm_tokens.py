"""The llm kind's tokenisation cache: a retry at a smaller batch encodes nothing again, and
the padded batches are exactly what the tokenizer itself gives."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch

from maml.runtime.kinds import _tokens
from maml.runtime.kinds._tokens import CachingTokenizer, cached_count
from maml.runtime.kinds.llm import LLMKind

PROMPTS = ["the quick brown fox jumps", "quantum", "a gpu runs out of memory when", "edges",
           "markdown documents describe pipelines"]


class Spy:
    """The real tokenizer, counting the texts it is asked to encode."""

    def __init__(self, tokenizer):
        self.tokenizer, self.encoded = tokenizer, []

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, texts, **options):
        self.encoded += list(texts)
        return self.tokenizer(texts, **options)


@pytest.fixture
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(tiny_llama))
    loaded.pad_token = loaded.pad_token or loaded.unk_token
    return loaded


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batches_equal_the_tokenizers_own(tokenizer, side):
    tokenizer.padding_side = side
    cached = CachingTokenizer(tokenizer, {})
    for batch in (PROMPTS, PROMPTS[:2], PROMPTS[3:], PROMPTS[::-1]):
        want = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=4)
        got = cached(batch, return_tensors="pt", padding=True, truncation=True, max_length=4)
        assert set(got.keys()) == set(want.keys())
        for name in want.keys():
            assert torch.equal(got[name], want[name]), (side, batch, name)


def test_each_text_is_encoded_once_per_setting(tokenizer):
    spy = Spy(tokenizer)
    cached = CachingTokenizer(spy, {})
    cached(PROMPTS[:3], return_tensors="pt", padding=True, truncation=True, max_length=8)
    cached(PROMPTS, return_tensors="pt", padding=True, truncation=True, max_length=8)
    assert sorted(spy.encoded) == sorted(PROMPTS)
    cached(PROMPTS[:1], return_tensors="pt", padding=True, truncation=True, max_length=3)
    assert spy.encoded[-1] == PROMPTS[0]            # another max_length: encoded again


def test_a_halved_retry_of_the_same_step_reuses_the_encodings(make_ctx, make_step, tiny_llama,
                                                              monkeypatch):
    kind, ctx = LLMKind(), make_ctx()
    spies = []
    real = _tokens.token_cached

    def spying(loaded, step_id):
        wrapped = real(loaded, step_id)
        spies.append(Spy(wrapped.tokenizer._tokenizer))
        wrapped.tokenizer._tokenizer = spies[-1]
        return wrapped

    monkeypatch.setattr(_tokens, "token_cached", spying)
    outputs = []
    for batch_size in (4, 2):                       # attempt 1, then the halved retry
        params = {"model": str(tiny_llama), "prompts": PROMPTS, "task": "embed",
                  "batch_size": batch_size}
        ctx.params = dict(params)
        outputs.append(kind.run(ctx, make_step("llm", params, id="emb")))
    assert sorted(spies[0].encoded) == sorted(PROMPTS) and spies[1].encoded == []
    assert cached_count() == len(PROMPTS)
    first, second = (torch.as_tensor(o["embeddings"]) for o in outputs)
    assert torch.allclose(first, second, atol=1e-5)
    other = {"model": str(tiny_llama), "prompts": PROMPTS[:1], "task": "embed"}
    ctx.params = dict(other)
    kind.run(ctx, make_step("llm", other, id="another"))
    assert cached_count() == 1                      # a new step starts the store afresh
