"""Loss parity with torchtune (``scripts/benchmark.py --compare-torchtune``): the learnable batches
both tools read, the adapter weights torchtune's model starts from, torchtune's hyperparameters
taken from tuner's config, and the comparison of the two loss series. The end-to-end comparison
needs torchtune ($TORCHTUNE_PYTHONPATH; skipped without it, as in CI)."""

from __future__ import annotations

import math
import os
from collections import Counter

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import parity
from benchmarks import torchtune_side as tt
from tests.bench.test_benchmark_harness import TINY

SHAPE = ["model.vocab_size=512", *TINY]
LORA = [
    "model._component_=tuner.models.llama3_2.lora_llama3_2",
    *SHAPE,
    "lr_scheduler.num_warmup_steps=2",
    "optimizer.lr=1e-2",
]
FULL = ["model._component_=tuner.models.llama3_2.llama3_2", *SHAPE, "optimizer.lr=3e-3"]  # no scheduler in the config
# QLoRA from weights both NF4 formats hold (--nf4-exact-weights); torchao quantizes k_proj too, and wants weights of
# 16,384-entry multiples: dim 256, 2 kv heads of 64
QLORA = [
    "model._component_=tuner.models.llama3_1.lora_llama3_1",
    "model.quantize_base=True",
    *[o for o in SHAPE if not o.startswith(("model.embed_dim", "model.intermediate_dim"))],
    "model.embed_dim=256",
    "model.intermediate_dim=256",
    "lr_scheduler.num_warmup_steps=2",
    "optimizer.lr=1e-2",
]


def _tiny_run(bench, workload: str, overrides: list[str], steps: int, **options) -> dict:
    return bench.run(workload, steps, 1, 32, 2, overrides, device="cpu", **options)


def test_learnable_tokens_are_a_fixed_markov_chain_within_the_vocabulary():
    tokens = parity.learnable_tokens(64, 128, vocab_size=300, seed=3, states=50)
    assert tokens.shape == (64, 128) and tokens.dtype == torch.int32
    assert torch.equal(tokens, parity.learnable_tokens(64, 128, vocab_size=300, seed=3, states=50))  # deterministic
    assert not torch.equal(tokens, parity.learnable_tokens(64, 128, vocab_size=300, seed=4, states=50))
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 300 and len(tokens.unique()) <= 50
    pairs = Counter(zip(tokens[:, :-1].flatten().tolist(), tokens[:, 1:].flatten().tolist()))
    following = Counter(a for a, _ in pairs)
    assert max(following.values()) <= len(parity.BRANCH_PROBS)  # at most 4 successors: learnable
    # the empirical next-token entropy is at most the chain's (1.21 nats; less where two successors of an id
    # coincide), far below the ln(50) = 3.9 of random ids
    firsts = Counter(tokens[:, :-1].flatten().tolist())
    entropy = -sum(n / firsts[a] * math.log(n / firsts[a]) * firsts[a] for (a, _), n in pairs.items()) / sum(
        firsts.values()
    )
    assert 0.9 < entropy < parity.CHAIN_ENTROPY + 0.05
    with pytest.raises(ValueError, match="seq_len >= 2"):
        parity.learnable_tokens(4, 1, vocab_size=300)


def test_token_file_is_read_back_in_order(tmp_path):
    tokens = parity.learnable_tokens(5, 16, vocab_size=1000)
    ds = parity.token_file_dataset(None, str(parity.write_token_file(tmp_path / "t.safetensors", tokens)))
    assert len(ds) == 5
    for i in range(5):
        assert ds[i]["tokens"] == tokens[i].tolist() and ds[i]["labels"] == ds[i]["tokens"]
    with pytest.raises(ValueError, match="packed=True is not supported"):
        parity.token_file_dataset(None, str(tmp_path / "t.safetensors"), packed=True)


def test_torchtunes_model_starts_from_the_adapter_file(tmp_path):
    from tuner.models.llama3_2 import lora_llama3_2

    shape = dict(
        vocab_size=100, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16, intermediate_dim=32, max_seq_len=32
    )
    kwargs = dict(lora_attn_modules=["q_proj", "v_proj"], lora_rank=4, lora_alpha=8, **shape)
    torch.manual_seed(0)
    source = lora_llama3_2(**kwargs)
    adapters = {k: v for k, v in source.state_dict().items() if ".lora_" in k}
    adapters = {k: torch.randn_like(v) for k, v in adapters.items()}  # lora_b nonzero too: every tensor is set
    path = parity.write_adapter_file(tmp_path / "a.safetensors", adapters)
    # tuner's builder stands in for torchtune's here: the wrapper calls whatever builder it is given
    model = parity.torchtune_model_with_adapters("tuner.models.llama3_2.lora_llama3_2", str(path), **kwargs)
    state = model.state_dict()
    for key, value in adapters.items():
        assert torch.equal(state[key], value), key
    del adapters["layers.0.attn.q_proj.lora_a.weight"]
    parity.write_adapter_file(tmp_path / "b.safetensors", adapters)
    with pytest.raises(ValueError, match=r"missing \['layers.0.attn.q_proj.lora_a.weight'\]"):
        parity.torchtune_model_with_adapters(
            "tuner.models.llama3_2.lora_llama3_2", str(tmp_path / "b.safetensors"), **kwargs
        )


def test_loss_parity_reports_the_largest_difference_and_the_noise_bound():
    tuner = [10.0, 8.0, 6.0, 5.0]
    report = parity.parity_report(
        tuner, {"torchtune": [10.0, 8.01, 6.0, 5.002], "torchtune_seed1": [10.0, 8.0, 6.02, 5.0]}
    )
    vs = report["tuner_vs_torchtune"]
    assert vs["steps"] == 4 and vs["at_step"] == 2
    assert vs["max_abs_diff"] == pytest.approx(0.01) and vs["max_rel_diff"] == pytest.approx(0.01 / 8.01)
    assert report["noise_bound_max_abs_diff"] == pytest.approx(0.02)
    assert report["within_noise"] is True
    assert report["tuner_vs_torchtune_seed1"]["max_abs_diff"] == pytest.approx(0.02)
    outside = parity.parity_report(
        [10.0, 8.5, 6.0, 5.0], {"torchtune": [10.0, 8.0, 6.0, 5.0], "t2": [10.0, 8.0, 6.0, 5.1]}
    )
    assert outside["within_noise"] is False
    alone = parity.parity_report(tuner, {"torchtune": tuner})
    assert alone["within_noise"] is None and alone["tuner_vs_torchtune"]["max_abs_diff"] == 0
    with pytest.raises(ValueError, match="no step logged"):
        parity.loss_parity([], [1.0])
    table = parity.side_by_side({"tuner": [1.0, 2.0], "torchtune": [1.0]})
    assert table.splitlines()[2].split() == ["2", "2.00000", "-"]


def test_torchtune_gets_tuners_hyperparameters():
    cfg = OmegaConf.create(
        {
            "optimizer": {"_component_": "torch.optim.AdamW", "lr": 3e-4, "weight_decay": 0.01, "betas": [0.9, 0.95]},
            "lr_scheduler": {
                "_component_": "tuner.training.lr_schedulers.get_cosine_schedule_with_warmup",
                "num_warmup_steps": 10,
            },
            "clip_grad_norm": 1.0,
        }
    )
    assert tt.parity_overrides(cfg) == [
        "optimizer._component_=torch.optim.AdamW",
        "optimizer.lr=0.0003",
        "optimizer.weight_decay=0.01",
        "optimizer.betas=[0.9,0.95]",
        "lr_scheduler._component_=torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
        "lr_scheduler.num_warmup_steps=10",
        "clip_grad_norm=1.0",
        "optimizer_in_bwd=False",
    ]
    full = OmegaConf.create({"optimizer": {"_component_": "torch.optim.AdamW", "lr": 2e-5}, "clip_grad_norm": None})
    assert tt.parity_overrides(full)[-2:] == ["clip_grad_norm=null", "optimizer_in_bwd=False"]


def test_learnable_data_trains_tuner_from_a_written_checkpoint(bench):
    """tuner loads the written HF checkpoint and trains on the token file: the loss falls (random
    tokens would keep it at ln(vocab))."""
    result = _tiny_run(bench, "full_1b", FULL, steps=8, learnable_data=True)
    losses = result["losses"]
    assert result["data"].startswith("learnable") and len(losses) == 8
    assert abs(losses[0] - math.log(512)) < 0.1  # std-0.02 weights: near uniform at first
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.skipif(not os.environ.get(tt.PATH_VARIABLE), reason=f"torchtune: set ${tt.PATH_VARIABLE}")
@pytest.mark.parametrize("workload", ["lora_1b", "full_1b", "qlora_8b"])
def test_tuner_and_torchtune_losses_agree_step_by_step(workload, bench):
    overrides = {"lora_1b": LORA, "full_1b": FULL, "qlora_8b": QLORA}[workload]
    exact = {"nf4_exact_weights": True} if workload == "qlora_8b" else {}
    result = _tiny_run(bench, workload, overrides, steps=10, compare_torchtune=True, torchtune_compile="off", **exact)
    vs = result["loss_parity"]["tuner_vs_torchtune"]
    losses = result["losses"]
    assert vs["steps"] == 10 and max(losses) - min(losses) > 0.05  # training moves the loss: a wrong step would show
    assert vs["max_abs_diff"] < 1e-4  # float32 on CPU: the same model, data, weights and steps


def test_curve_gap_reads_the_smoothed_relative_difference_and_the_held_out_tail():
    assert parity.smoothed([4.0, 2.0, 6.0, 0.0], window=2) == [4.0, 3.0, 4.0, 3.0]
    reference = [10.0 - 0.03 * i for i in range(100)]
    same = parity.curve_gap(reference, reference)
    assert same["max_rel"] == 0 and same["within"] and same["last_step_past_bound"] is None
    # a curve 3% higher over steps 30-49 only: past the 1% bound there (smoothing spreads it over
    # 20 more steps), back within it at the end, so the held-out figure agrees
    bumped = [x * (1.03 if 30 <= i < 50 else 1.0) for i, x in enumerate(reference)]
    gap = parity.curve_gap(reference, bumped, window=20, bound=0.01)
    assert not gap["within"] and 30 < gap["at_step"] <= 51 and 0.025 < gap["max_rel"] <= 0.03
    assert gap["last_step_past_bound"] < 70 and gap["held_out_rel"] == 0
    late = parity.curve_gap(reference, reference[:80] + [x * 1.02 for x in reference[80:]])
    assert not late["within"] and late["held_out_rel"] == pytest.approx(0.02)


def test_learnable_dataset_is_the_token_generator_in_memory():
    ds = parity.learnable_dataset(None, seq_len=16, num_samples=3, vocab_size=1000, seed=2, states=32)
    expected = parity.learnable_tokens(3, 16, 1000, seed=2, states=32)
    assert len(ds) == 3 and all(ds[i]["tokens"] == expected[i].tolist() == ds[i]["labels"] for i in range(3))
    with pytest.raises(ValueError, match="packed=True"):
        parity.learnable_dataset(None, 16, 3, 1000, packed=True)
