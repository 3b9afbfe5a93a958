"""Mixed-adapter batches: rows of one batch use different adapters (LoRA, rsLoRA, DoRA, VeRA, of
different ranks and target modules) over one unmerged base, in one forward. Each row's logits equal
that adapter merged alone (tuner's merge path) within 1e-5 in fp32 and PEFT's own mixed-batch
forward (``adapter_names=``); greedy generation of a batch of prompts of different lengths equals
generating each prompt alone with its adapter merged; bad inputs give one clear error each."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hf_tiny import VOCAB, tiny_hf_model
from peft import LoraConfig, PeftModel, VeraConfig, get_peft_model

from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.errors import CheckpointError, ConfigError, UsageError
from tuner.generation import MixedAdapters, generate, generate_batch, load_adapter, merge_adapter_into

# name -> PEFT config; ranks and target modules differ, so stacks are padded and some rows skip a layer
ADAPTERS = {
    "lora": lambda: LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    "rslora": lambda: LoraConfig(
        r=8,
        lora_alpha=4,
        use_rslora=True,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
    ),
    "dora": lambda: LoraConfig(
        r=6, lora_alpha=12, use_dora=True, init_lora_weights=False, target_modules=["q_proj", "o_proj", "down_proj"]
    ),
    "vera": lambda: VeraConfig(r=16, target_modules=["v_proj", "up_proj"], projection_prng_key=3),
}
FAMILY = "qwen2_5"  # q/k/v biases: DoRA's row factor must leave the bias alone
ROWS = ["lora", "dora", "base", "vera", "rslora"]


def _save_peft(hf, name: str, folder: Path, seed: int) -> Path:
    model = get_peft_model(copy.deepcopy(hf), ADAPTERS[name]())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # nonzero, non-identity values (VeRA's lambda_b and DoRA's m/||W|| start trivial)
        for n, p in model.named_parameters():
            if p.requires_grad:
                if "magnitude" in n:
                    p.mul_(torch.empty(p.shape).uniform_(0.5, 1.5, generator=gen))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(HF base, tuner base, {name: Adapter}, {name: PEFT folder}, model_type, hf config)."""
    hf, cfg, mt = tiny_hf_model(FAMILY, tie_word_embeddings=False)
    model = build_model_from_hf_config(cfg, mt).eval()
    model.load_state_dict(hf_to_tuner(hf.state_dict(), mt, cfg))
    root = tmp_path_factory.mktemp("mixed")
    folders = {name: _save_peft(hf, name, root / name, seed) for seed, name in enumerate(ADAPTERS)}
    adapters = {name: load_adapter(f, mt, cfg, name=name) for name, f in folders.items()}
    return hf, model, adapters, folders, mt, cfg


def _merged(model, adapter):
    merged = copy.deepcopy(model)
    if adapter is not None:
        merge_adapter_into(merged, adapter)
    return merged


def _count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_each_row_equals_its_adapter_merged_in_one_forward(setup):
    _, model, adapters, _, _, _ = setup
    tokens = torch.randint(3, VOCAB, (len(ROWS), 9), generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mixed = MixedAdapters(model, adapters)
    calls = _count_forwards(model)
    with torch.no_grad(), mixed.select(ROWS):
        logits = model(tokens)
    assert calls[0] == 1
    base_logits = model(tokens)  # outside `select` the model is the plain base again
    for i, name in enumerate(ROWS):
        expected = _merged(model, adapters.get(name))(tokens[i : i + 1])
        torch.testing.assert_close(logits[i : i + 1], expected, atol=1e-5, rtol=0)
        if name != "base":
            assert (logits[i] - base_logits[i]).abs().max() > 1e-2, name  # the adapter is not a no-op
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the base stays unmerged


def test_matches_peft_mixed_batch_forward(setup):
    """PEFT's own per-row adapters (``adapter_names=``) on the HF model; PEFT refuses DoRA there."""
    hf, model, adapters, folders, _, _ = setup
    names = ["lora", "rslora"]
    peft_model = PeftModel.from_pretrained(copy.deepcopy(hf), folders[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(folders[name], adapter_name=name)
    peft_model.eval()
    rows = ["rslora", "__base__", "lora", "rslora"]
    tokens = torch.randint(3, VOCAB, (len(rows), 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = peft_model(tokens, adapter_names=rows).logits
        with MixedAdapters(model, {n: adapters[n] for n in names}).select([r.strip("_") for r in rows]):
            got = model(tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_batch_generation_equals_each_prompt_alone(setup):
    _, model, adapters, _, _, _ = setup
    gen = torch.Generator().manual_seed(2)
    rows = ["rslora", "base", "vera", "dora", "lora"]
    short, single, long = (torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in (4, 1, 9))
    prompts = [short, short, single, long, long]  # lengths differ (left padding); rows 0/1 and 3/4 share a prompt
    mixed = MixedAdapters(model, adapters)
    calls = _count_forwards(model)
    n = 8
    out = generate_batch(model, prompts, n, adapters=mixed, adapter_names=rows)
    assert calls[0] == n  # one forward per step for the whole batch: prefill, then one per new token
    for prompt, name, got in zip(prompts, rows, out):
        assert got == generate(_merged(model, adapters.get(name)), prompt, n)[len(prompt) :].tolist(), name
    assert out[0] != out[1] and out[3] != out[4]  # on the same prompt, the adapters change the answer
    # a stop token ends its row only
    stop = out[0][2]
    stopped = generate_batch(model, prompts, n, adapters=mixed, adapter_names=rows, stop_tokens=[stop])
    assert stopped[0] == out[0][: out[0].index(stop) + 1]
    for full, cut in zip(out[1:], stopped[1:]):
        assert cut == (full[: full.index(stop) + 1] if stop in full else full)


def test_errors(setup, tmp_path):
    _, model, adapters, folders, mt, cfg = setup
    mixed = MixedAdapters(model, {"lora": adapters["lora"], "dora": adapters["dora"]})
    with pytest.raises(ConfigError, match=r"unknown adapter 'lroa'.*did you mean 'lora'"):
        generate_batch(model, [[5, 6]], 2, adapters=mixed, adapter_names=["lroa"])
    with pytest.raises(UsageError, match="2 prompts but 1 adapter names"):
        generate_batch(model, [[5], [6]], 2, adapters=mixed, adapter_names=["lora"])
    with pytest.raises(UsageError, match="3 rows but 2 adapter names"), mixed.select(["lora", "dora"]):
        model(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(UsageError, match="no adapters"):
        generate_batch(model, [[5]], 2, adapter_names=["lora"])
    with pytest.raises(ConfigError, match="may not be named 'base'"):
        MixedAdapters(model, {"base": adapters["lora"]})
    # an adapter over PiSSA's residual base cannot share the base
    pissa = tmp_path / "pissa"
    pissa.mkdir()
    for f in folders["lora"].iterdir():
        (pissa / f.name).write_bytes(f.read_bytes())
    config = json.loads((pissa / "adapter_config.json").read_text())
    (pissa / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": "pissa_niter_4"}))
    with pytest.raises(CheckpointError, match="rewritten base.*pissa_niter_4"):
        MixedAdapters(model, {"lora": adapters["lora"], "p": load_adapter(pissa, mt, cfg, name="p")})
    lora = adapters["lora"]
    a0 = lora.state["layers.0.attn.q_proj.lora_a.weight"]
    unconverted = dataclasses.replace(lora, state={**lora.state, "layers.0.attn.q_proj.pissa_init_a": a0})
    with pytest.raises(CheckpointError, match="rewritten base"):  # tuner's own unconverted PiSSA factors
        MixedAdapters(model, {"p": unconverted})
    vera = adapters["vera"]
    small = {k: (v[:, :10] if k.endswith("vera_A") else v) for k, v in vera.state.items()}
    with pytest.raises(CheckpointError, match="projections .* too small for layers.0"):
        MixedAdapters(model, {"vera": dataclasses.replace(vera, state=small)})
    # an adapter for another base (hidden size 32)
    other, other_cfg, _ = tiny_hf_model(FAMILY, hidden_size=32, tie_word_embeddings=False)
    get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="does not fit this model"):
        MixedAdapters(model, {"other": load_adapter(tmp_path / "other", mt, other_cfg, name="other")})
