"""``scripts/benchmark.py --nf4-exact-weights``: QLoRA weights that tuner's NF4 (bitsandbytes' format) and
torchtune's (torchao's) both hold exactly, so that the loss comparison with torchtune starts from
identical dequantized weights; ``scripts/nf4_exact_check.py`` measures it.

torchao's side is the real ``torchao.dtypes.nf4tensor`` of the dev extra (0.16-0.17, there for
torchtune's vendored tests): its NF4 code, from ``get_block_absmax`` to ``get_original_weight``, is
the same text as torchao 0.11's, which torchtune 0.6.1 runs (compared 2026-12-02)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import nf4_exact
from benchmarks import torchtune_side as tt
from tests.bench.conftest import load_script
from tests.bench.test_benchmark_harness import TINY

pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def check():
    """``scripts/nf4_exact_check.py``: its weights on CPU and its check against torchao's ``to_nf4``."""
    to_nf4 = pytest.importorskip("torchao.dtypes.nf4tensor").to_nf4
    script = load_script("nf4_exact_check")
    weights = script.weights("cpu")
    return lambda name, dtype: (weights[name].to(dtype), script.check(weights[name].to(dtype), to_nf4, False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_nf4_formats_hold_the_weight_exactly(dtype, check):
    weight, result = check("nf4_exact", dtype)
    assert set(weight.float().unique().tolist()) == {-nf4_exact.SCALE, 0.0, nf4_exact.SCALE}
    assert torch.equal(weight.float().view(-1, 64).abs().amax(1), torch.full((2048,), nf4_exact.SCALE))
    assert 0.019 < weight.float().std().item() < 0.021  # as the usual std-0.02 init
    assert result["tuner_exact"] and result["torchao_exact"] and result["entries_differing"] == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_normal_weight_dequantizes_differently_in_the_two_formats(dtype, check):
    """What the option removes: the same std-0.02 weight becomes two different dense weights."""
    _, result = check("normal", dtype)
    assert not result["tuner_exact"] and not result["torchao_exact"]
    assert result["entries_differing"] > 0.2 and result["rel_norm_diff"] > 1e-3


def test_two_block_scales_cannot_be_exact_in_float32(check):
    """Why one scale per weight: with two (2^-5 and 2^-6 alternating, the absmaxes' mean exact) the
    centred absmaxes are +-2^-7; bitsandbytes' 8-bit dynamic code has +1.0 but no -1.0, torchao stores
    +2^-7 as 127/128 of it: neither holds the weight (in float32)."""
    _, result = check("two_scales", torch.float32)
    assert not result["tuner_exact"] and not result["torchao_exact"] and result["entries_differing"] > 0.2


def test_checkpoint_has_nf4_exact_block_linears_and_normal_embeddings(tmp_path):
    from tests.bench.test_torchtune_side import SMALL, _load_hf
    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.models.llama3_1 import llama3_1

    config = hf_config_from_model(llama3_1(**SMALL, tie_word_embeddings=False), "LLAMA3")
    files = tt.write_hf_checkpoint(tmp_path / "m", config, "LLAMA3", None, nf4_exact=True)
    loaded = _load_hf(tmp_path / "m", files, "LLAMA3", tmp_path)
    exact = {k for k, v in loaded.items() if nf4_exact.is_block_linear(k, v.shape)}
    assert len(exact) == 2 * 7  # q, k, v, output_proj, w1, w2, w3 of both layers
    for key in exact:
        assert set(loaded[key].float().unique().tolist()) == {-nf4_exact.SCALE, 0.0, nf4_exact.SCALE}, key
    for key in ("tok_embeddings.weight", "output.weight"):
        assert len(loaded[key].unique()) > 1000, key  # random normal, as without the option
    assert torch.equal(loaded["norm.scale"], torch.ones(32, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="nf4_exact shapes random weights"):
        tt.write_hf_checkpoint(tmp_path / "n", config, "LLAMA3", loaded, nf4_exact=True)


QLORA = [
    "model._component_=tuner.models.llama3_1.lora_llama3_1",
    "model.quantize_base=True",
    "model.vocab_size=512",
    *[o for o in TINY if not o.startswith(("model.embed_dim", "model.intermediate_dim"))],
    "model.embed_dim=128",  # NF4 blocks of 64 (torchao: weights of 16,384 entries, here 128 x 128)
    "model.intermediate_dim=128",
]


def test_tuners_nf4_weights_are_the_checkpoints_exactly(bench):
    """End to end (tuner alone): the harness writes the checkpoint, tuner's QLoRA quantizes the linears
    with adapters (q, v, output_proj, w1, w2, w3 of 2 layers) and reports them identical to it."""
    result = bench.run("qlora_8b", 2, 1, 16, 2, QLORA, device="cpu", learnable_data=True, nf4_exact_weights=True)
    assert result["weights"].startswith("nf4-exact") and len(result["losses"]) == 2
    assert result["nf4_exact"] == {"nf4_weights": 12, "entries_differing": 0, "max_abs_diff": 0.0}


def _refused(bench, capsys, *argv: str) -> tuple[int, str]:
    code = bench.main([*argv, "--device", "cpu", "--steps", "2", "--seq-len", "16", "--batch-size", "1"])
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing trained
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return code, lines[0]


def test_nf4_exact_weights_are_refused_without_an_nf4_base(bench, capsys):
    code, line = _refused(bench, capsys, "--workload", "lora_1b", "--compare-torchtune", "--nf4-exact-weights")
    assert code == 2 and line.startswith("error: --nf4-exact-weights is for QLoRA")
    assert "--workload lora_1b" in line and "use --workload qlora_8b, or drop --nf4-exact-weights" in line


@pytest.mark.parametrize("extra", [[], ["--compare-torchtune", "--packed"]])
def test_nf4_exact_weights_are_refused_where_no_checkpoint_is_written(bench, capsys, extra):
    code, line = _refused(bench, capsys, "--workload", "qlora_8b", "--nf4-exact-weights", *extra)
    assert code == 2 and line.startswith("error: --nf4-exact-weights shapes the checkpoint")
    assert "add --compare-torchtune (without --packed) or --learnable-data" in line
