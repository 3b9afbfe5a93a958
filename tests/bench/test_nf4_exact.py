"""``scripts/benchmark.py --nf4-exact-weights``: QLoRA weights that tuner's NF4 (bitsandbytes' format) and
torchtune's (torchao 0.11's) both hold exactly, so that the loss comparison with torchtune starts from
identical dequantized weights.

torchao is not installed in CI (nor in the dev extra), so its side is `_torchao_dequantize`: its
``NF4Tensor`` format rules restated (levels rounded to 4 decimals, the absmaxes' mean subtracted and
linear int8 per 256-block, ``round(x * 128 / blockmax)`` clamped to [-128, 127]). Against the real
torchao 0.11 on CPU it returned the same tensors as ``to_nf4(w).get_original_weight()`` on every weight
here (docs/benchmarks.md, "Measured on CPU")."""

from __future__ import annotations

import pytest
import torch

from benchmarks import nf4_exact
from benchmarks import torchtune_side as tt
from tests.bench.test_benchmark_harness import TINY
from tuner.quantization import dequantize_nf4, quantize_nf4

pytest.importorskip("bitsandbytes")

# torchao 0.11's NF4 levels (torchao/dtypes/nf4tensor.py, NF4Tensor.from_tensor): bitsandbytes' to 4 decimals
TORCHAO_LEVELS = [
    -1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
    0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0,
]  # fmt: skip


def _torchao_dequantize(weight: torch.Tensor) -> torch.Tensor:
    """``torchao.dtypes.nf4tensor.to_nf4(weight).get_original_weight()`` (block 64, scaler block 256),
    in ``weight``'s dtype as torchao computes it."""
    dtype = weight.dtype
    levels = torch.tensor(TORCHAO_LEVELS, dtype=dtype)
    blocks = weight.flatten().view(-1, 64)
    absmax = blocks.abs().max(dim=1).values
    mean = absmax.mean()
    centred = (absmax - mean).view(-1, 256)
    factor = 256 / (2 * centred.abs().max(dim=1, keepdim=True).values)
    stored = (centred * factor).round().clamp(-128, 127).to(torch.int8)
    scales = (stored / factor).flatten().to(dtype) + mean
    index = (blocks / absmax[:, None]).unsqueeze(-1).sub(levels).abs().argmin(dim=-1)
    return (levels[index] * scales[:, None]).view(weight.shape)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_both_nf4_formats_hold_the_weight_exactly(dtype):
    weight = nf4_exact.nf4_exact_weight((256, 512), torch.Generator().manual_seed(0)).to(dtype)
    assert set(weight.float().unique().tolist()) == {-nf4_exact.SCALE, 0.0, nf4_exact.SCALE}
    assert torch.equal(weight.float().view(-1, 64).abs().amax(1), torch.full((2048,), nf4_exact.SCALE))
    assert 0.019 < weight.float().std().item() < 0.021  # as the usual std-0.02 init
    assert torch.equal(dequantize_nf4(quantize_nf4(weight)), weight)  # tuner: bitsandbytes' format
    assert torch.equal(_torchao_dequantize(weight), weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_normal_weight_dequantizes_differently_in_the_two_formats(dtype):
    """What the option removes: the same std-0.02 weight becomes two different dense weights."""
    weight = (torch.randn(256, 512, generator=torch.Generator().manual_seed(1)) * 0.02).to(dtype)
    tuner_side, torchao_side = dequantize_nf4(quantize_nf4(weight)), _torchao_dequantize(weight)
    assert not torch.equal(tuner_side, weight) and not torch.equal(torchao_side, weight)
    assert (tuner_side != torchao_side).float().mean() > 0.2


def test_two_block_scales_cannot_be_exact_in_float32():
    """Why one scale per weight: with two (2^-5 and 2^-6 alternating, the absmaxes' mean exact) the
    centred absmaxes are +-2^-7; bitsandbytes' 8-bit dynamic code has +1.0 but no -1.0, torchao stores
    +2^-7 as 127/128 of it, so each format rounds one half of the blocks."""
    levels = nf4_exact.nf4_exact_weight((256, 512), torch.Generator().manual_seed(2)) / nf4_exact.SCALE
    scales = torch.tensor([2.0**-5, 2.0**-6]).repeat(levels.numel() // 128)
    weight = (levels.view(-1, 64) * scales[:, None]).view(256, 512)
    tuner_side, torchao_side = dequantize_nf4(quantize_nf4(weight)), _torchao_dequantize(weight)
    low, high = weight.view(-1, 64)[1::2] != 0, weight.view(-1, 64)[0::2] != 0
    assert not torch.equal(tuner_side.view(-1, 64)[1::2][low], weight.view(-1, 64)[1::2][low])
    assert torch.equal(tuner_side.view(-1, 64)[0::2][high], weight.view(-1, 64)[0::2][high])
    assert not torch.equal(torchao_side.view(-1, 64)[0::2][high], weight.view(-1, 64)[0::2][high])
    assert torch.equal(torchao_side.view(-1, 64)[1::2][low], weight.view(-1, 64)[1::2][low])


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
