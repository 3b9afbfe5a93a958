"""Generation: KV cache == no cache == transformers' greedy generate; sampling options; stopping."""

from __future__ import annotations

import pytest
import torch
from hf_tiny import VOCAB, tiny_hf_model
from transformers import GenerationConfig

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.errors import UsageError
from tuner.generation import generate, sample_next_token, stream


def _pair(family):
    hf, cfg, mt = tiny_hf_model(family)
    model = build_model_from_hf_config(cfg, mt).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), mt, cfg))
    return hf, model


@pytest.fixture(scope="module")
def llama():
    return _pair("llama3_2")


# gemma2 and mistral generate past their 8-token sliding window; qwen2_5 has biases + tied output
@pytest.mark.parametrize("family", ["llama3_2", "gemma2", "mistral", "qwen2_5"])
def test_cache_matches_no_cache_and_hf(family):
    hf, model = _pair(family)
    prompt = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    n = 10  # prompt 5 + 10 goes past the 8-token sliding windows
    with_cache = generate(model, prompt, n)
    without = generate(model, prompt, n, use_cache=False)
    ref = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        generation_config=GenerationConfig(
            max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        ),
    )
    assert with_cache.shape == (2, 5 + n)
    assert torch.equal(with_cache, without)
    assert torch.equal(with_cache, ref)
    assert not model.caches_are_setup()  # the cache made for the call is gone


def test_single_prompt_returns_1d_and_stops_on_stop_token(llama):
    _, model = llama
    prompt = [5, 9, 17]
    full = generate(model, prompt, 10)
    assert full.shape == (13,) and full[:3].tolist() == prompt
    new = full[3:].tolist()
    stop = new[3]
    first = new.index(stop)
    stopped = generate(model, prompt, 10, stop_tokens=[stop])
    assert stopped[3:].tolist() == new[: first + 1]


def test_batch_stops_when_all_stopped_and_pads_finished_rows(llama):
    _, model = llama
    prompt = torch.randint(3, VOCAB, (2, 4), generator=torch.Generator().manual_seed(1))
    free = generate(model, prompt, 8)
    stop_a = free[0, 5].item()  # row 0 stops at step 1 (or earlier if it repeats)
    out = generate(model, prompt, 8, stop_tokens=[stop_a, free[1, 9].item()], pad_id=-1)
    for row in range(2):
        gen = out[row, 4:].tolist()
        hits = [i for i, t in enumerate(gen) if t in (stop_a, free[1, 9].item())]
        assert hits, gen
        assert all(t == -1 for t in gen[hits[0] + 1 :])


def test_stream_yields_one_token_per_step(llama):
    _, model = llama
    steps = list(stream(model, [4, 5], 6))
    assert len(steps) == 6 and all(s.shape == (1,) for s in steps)
    assert torch.cat(steps).tolist() == generate(model, [4, 5], 6)[2:].tolist()


def test_sampling_is_reproducible_and_top_k_1_is_greedy(llama):
    _, model = llama
    a = generate(model, [4, 5, 6], 8, temperature=1.0, top_k=20, rng=torch.Generator().manual_seed(7))
    b = generate(model, [4, 5, 6], 8, temperature=1.0, top_k=20, rng=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    greedy = generate(model, [4, 5, 6], 8)
    assert torch.equal(generate(model, [4, 5, 6], 8, temperature=0.7, top_k=1), greedy)
    assert torch.equal(generate(model, [4, 5, 6], 8, temperature=0.7, top_p=1e-6), greedy)


def test_top_p_keeps_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    seen = {
        sample_next_token(logits, temperature=1.0, top_p=0.75, rng=torch.Generator().manual_seed(i)).item()
        for i in range(200)
    }
    assert seen == {0, 1}
    seen_k = {
        sample_next_token(logits, temperature=1.0, top_k=3, rng=torch.Generator().manual_seed(i)).item()
        for i in range(300)
    }
    assert seen_k == {0, 1, 2}


def test_existing_cache_is_reset_and_kept(llama):
    _, model = llama
    model.setup_caches(1, torch.float32, 32)
    try:
        first = generate(model, [4, 5], 5)
        second = generate(model, [4, 5], 5)
        assert torch.equal(first, second) and model.caches_are_enabled()
    finally:
        model.remove_caches()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=100), "max_seq_len"),
        (dict(max_new_tokens=2, temperature=-1.0), "temperature"),
        (dict(max_new_tokens=2, temperature=1.0, top_k=0), "top_k"),
        (dict(max_new_tokens=2, temperature=1.0, top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_arguments_raise_usage_error(llama, kwargs, match):
    _, model = llama
    with pytest.raises(UsageError, match=match):
        generate(model, [4, 5], **kwargs)


def test_bad_prompt_shapes_raise(llama):
    _, model = llama
    with pytest.raises(UsageError, match="prompt"):
        generate(model, torch.zeros(1, 1, 2, dtype=torch.long), 2)
    with pytest.raises(UsageError, match="empty"):
        generate(model, [], 2)


def test_ragged_batch_equals_each_prompt_alone():
    """Prompts of different lengths in one batch: left padding, per-row positions, a mask that hides
    the padding; gemma2 (soft-capping, sliding window of 8) decodes past its window."""
    _, model = _pair("gemma2")
    gen = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (3, 7, 1, 5)]
    for use_cache in (True, False):
        batch = generate(model, prompts, 9, use_cache=use_cache)
        assert isinstance(batch, list) and [len(r) for r in batch] == [len(p) + 9 for p in prompts]
        for prompt, row in zip(prompts, batch):
            assert row.tolist() == generate(model, prompt, 9).tolist()
    with pytest.raises(UsageError, match="prompt 1 of the batch is empty"):
        generate(model, [[4, 5], []], 2)
