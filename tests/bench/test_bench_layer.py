"""scripts/bench_layer.py's prototype variants compute what the layer computes (CPU, float32), so
the GPU timings it reports compare equal work."""

from __future__ import annotations

import pytest
import torch

VARIANTS = [("fused", True, True), ("fused_base", True, False), ("shared_a", False, True)]


def _outputs(bench_layer, name: str | None):
    shape = bench_layer.Shape(dim=64, heads=4, kv_heads=2, hidden=96, rank=8, alpha=16.0)
    model = bench_layer.build_layer(shape, device="cpu", dtype=torch.float32)
    layer = model.layers[0]
    if name is not None:
        bench_layer.prepare(name, layer)
    cos, sin = model.rope(12, None)
    torch.manual_seed(1)
    x = torch.randn(2, 12, shape.dim, requires_grad=True)
    out = layer(x, rope=(cos, sin))
    out.backward(torch.randn_like(out))
    grads = {n: p.grad for n, p in layer.named_parameters() if p.requires_grad}
    return layer, {"out": out.detach(), "dx": x.grad, **grads}


@pytest.mark.parametrize("name,fuse_base,share_a", VARIANTS)
def test_prototype_matches_the_layer(bench_layer, name, fuse_base, share_a):
    _, reference = _outputs(bench_layer, None)
    layer, values = _outputs(bench_layer, name)
    assert values.keys() == reference.keys() and len(values) == 2 + 12  # out, dx, A and B of 6 adapted projections
    for key in reference:
        assert torch.allclose(values[key], reference[key], atol=1e-5, rtol=1e-4), key
    attn = layer.attn
    shared = attn.q_proj.weight.untyped_storage().data_ptr() == attn.k_proj.weight.untyped_storage().data_ptr()
    assert shared == fuse_base  # the frozen q/k/v weights became slices of one tensor only when fusing bases


def test_unknown_variant_is_refused(bench_layer, monkeypatch, capsys):
    monkeypatch.setattr(bench_layer.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("sys.argv", ["bench_layer.py", "--variants", "compiled", "fussed"])
    assert bench_layer.main() == 2
    assert "unknown variant(s) ['fussed']" in capsys.readouterr().err
