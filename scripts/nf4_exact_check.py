"""Whether tuner's NF4 (bitsandbytes' format) and torchao 0.11's (torchtune's) hold a weight exactly:
``--nf4-exact-weights``' weights (`benchmarks.nf4_exact`) and, for contrast, a normal std-0.02 one and
one with two block scales; prints one JSON line per (dtype, weight) (docs/benchmarks.md, loss parity).

    TORCHTUNE_PYTHONPATH=/tmp/site_tt python3 scripts/nf4_exact_check.py [--device cuda] [--compile]

torchao is imported from $TORCHTUNE_PYTHONPATH (put in front of sys.path: this process builds no peft
layers), else as installed (the dev extra's 0.16-0.17 has the same NF4 code); without it the torchao
fields are null. ``--compile``: tuner dequantizes under torch.compile
(its compiled path: the Triton op on CUDA, tensor ops elsewhere) instead of eagerly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.nf4_exact import SCALE, nf4_exact_weight  # noqa: E402
from tuner.quantization import dequantize_nf4, quantize_nf4  # noqa: E402


def weights(device: str) -> dict[str, torch.Tensor]:
    """float32 weights of 256 x 512 on ``device``: nf4-exact, normal std 0.02, and nf4-exact levels
    under two alternating block scales (2^-5, 2^-6)."""
    g = torch.Generator().manual_seed(0)
    exact = nf4_exact_weight((256, 512), g)
    normal = torch.randn(256, 512, generator=g) * 0.02
    levels = nf4_exact_weight((256, 512), g) / SCALE
    two = (levels.view(-1, 64) * torch.tensor([2.0**-5, 2.0**-6]).repeat(levels.numel() // 128)[:, None]).view(256, 512)
    return {k: v.to(device) for k, v in {"nf4_exact": exact, "normal": normal, "two_scales": two}.items()}


def check(weight: torch.Tensor, to_nf4, compile_tuner: bool) -> dict:
    """How tuner's and (where given) torchao's dequantized NF4 forms of ``weight`` compare with it and each other."""
    dequantize = torch.compile(dequantize_nf4, fullgraph=False) if compile_tuner else dequantize_nf4
    tuner_side = dequantize(quantize_nf4(weight))
    out = {"tuner_exact": torch.equal(tuner_side, weight), "torchao_exact": None, "entries_differing": None}
    if to_nf4 is not None:
        torchao_side = to_nf4(weight).get_original_weight()
        out["torchao_exact"] = torch.equal(torchao_side, weight)
        out["entries_differing"] = round((tuner_side != torchao_side).float().mean().item(), 4)
        out["rel_norm_diff"] = round(
            ((tuner_side.float() - torchao_side.float()).norm() / weight.float().norm()).item(), 5
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="tuner's compiled dequantization")
    args = parser.parse_args(argv)
    site = os.environ.get("TORCHTUNE_PYTHONPATH")
    if site:
        sys.path[:0] = site.split(os.pathsep)
    try:
        from torchao.dtypes.nf4tensor import to_nf4
    except ImportError:
        to_nf4 = None
    for dtype in (torch.float32, torch.bfloat16):
        for name, weight in weights(args.device).items():
            result = {
                "dtype": str(dtype),
                "weight": name,
                "device": args.device,
                **check(weight.to(dtype), to_nf4, args.compile),
            }
            print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
