"""Quantize-as-load: a tiny model built on the meta device filled from bf16 tensors one at a time."""

import weakref

import pytest
import torch
from torch import nn

from tuner.errors import CheckpointError
from tuner.quantization import NF4Linear, dequantize_nf4, get_nf4_weight, quantize_nf4, quantize_state_dict_into

pytest.importorskip("bitsandbytes")


class Block(nn.Module):
    def __init__(self, dim, hidden, quantized):
        super().__init__()
        make = (lambda i, o: NF4Linear(i, o)) if quantized else (lambda i, o: nn.Linear(i, o, bias=False))
        self.norm = nn.LayerNorm(dim)
        self.w1, self.w2 = make(dim, hidden), make(hidden, dim)

    def forward(self, x):
        return x + self.w2(torch.relu(self.w1(self.norm(x))))


class Tiny(nn.Module):
    def __init__(self, quantized, vocab=32, dim=64, hidden=128, layers=2):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(Block(dim, hidden, quantized) for _ in range(layers))
        self.output = nn.Linear(dim, vocab, bias=False)  # stays dense, as QLoRA's output often does

    def forward(self, tokens):
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.output(h)


def _bf16_checkpoint():
    torch.manual_seed(0)
    return {k: v.to(torch.bfloat16) for k, v in Tiny(quantized=False).state_dict().items()}


def _check_loaded(model, sd):
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    for i, layer in enumerate(model.layers):
        for name in ("w1", "w2"):
            expected = dequantize_nf4(quantize_nf4(sd[f"layers.{i}.{name}.weight"]))
            assert torch.equal(getattr(layer, name).dequantize(), expected)
    assert torch.equal(model.output.weight, sd["output.weight"])
    # the quantized model computes what the dense model over the dequantized weights computes
    dense = Tiny(quantized=False).to(torch.bfloat16)
    dense.load_state_dict(
        {
            **sd,
            **{
                f"layers.{i}.{n}.weight": getattr(layer, n).dequantize()
                for i, layer in enumerate(model.layers)
                for n in ("w1", "w2")
            },
        }
    )
    tokens = torch.randint(0, 32, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), dense(tokens))


def test_load_state_dict_assign_quantizes_into_a_meta_model():
    sd = _bf16_checkpoint()
    with torch.device("meta"):
        model = Tiny(quantized=True)
    model.load_state_dict(sd, strict=True, assign=True)
    _check_loaded(model, sd)


def test_quantize_state_dict_into_holds_one_dense_tensor_at_a_time():
    sd = _bf16_checkpoint()
    with torch.device("meta"):
        model = Tiny(quantized=True)
    alive = []

    def stream():  # a lazy source, like reading safetensors shards tensor by tensor
        for key in list(sd):
            assert not [r for r in alive if r() is not None], "an earlier dense tensor is still referenced"
            t = sd[key].clone()
            if key.endswith(("w1.weight", "w2.weight")):
                alive.append(weakref.ref(t))
            yield key, t
            del t

    result = quantize_state_dict_into(model, stream())
    assert result.missing_keys == [] and result.unexpected_keys == []
    _check_loaded(model, sd)


def test_shards_device_and_dtype():
    sd = _bf16_checkpoint()
    keys = list(sd)
    shards = [{k: sd[k].float() for k in keys[:5]}, {k: sd[k].float() for k in keys[5:]}]
    with torch.device("meta"):
        model = Tiny(quantized=True)
    quantize_state_dict_into(model, shards, device="cpu", dtype=torch.bfloat16)
    assert model.tok_embeddings.weight.dtype == torch.bfloat16
    _check_loaded(model, sd)


def test_a_real_model_buffer_payload_is_about_half_a_byte_per_param():
    with torch.device("meta"):
        model = Tiny(quantized=True, dim=128, hidden=256)
    quantize_state_dict_into(
        model, {k: v.to(torch.bfloat16) for k, v in Tiny(False, dim=128, hidden=256).state_dict().items()}
    )
    nf4 = [m for m in model.modules() if isinstance(m, NF4Linear)]
    params = sum(m.in_features * m.out_features for m in nf4)
    stored = sum(b.numel() * b.element_size() for m in nf4 for b in m.buffers())
    assert 0.5 < stored / params < 0.53
    assert stored == sum(get_nf4_weight(m).nbytes for m in nf4)


def test_missing_and_unexpected_keys():
    sd = _bf16_checkpoint()
    partial = {k: v for k, v in sd.items() if k != "layers.1.w2.weight"}
    with torch.device("meta"):
        model = Tiny(quantized=True)
    with pytest.raises(CheckpointError, match=r"missing 4 key\(s\) \['layers.1.w2.weight_absmax'"):
        quantize_state_dict_into(model, partial)
    with torch.device("meta"):
        model = Tiny(quantized=True)
    result = quantize_state_dict_into(model, {**partial, "extra.weight": torch.zeros(2)}, strict=False)
    assert result.unexpected_keys == ["extra.weight"]
    assert result.missing_keys == [
        f"layers.1.w2.{n}" for n in ("weight_absmax", "weight_absmax_offset", "weight_absmax_scale", "weight_nf4")
    ]
    with torch.device("meta"):
        model = Tiny(quantized=True)
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\) \['extra.weight'\]"):
        quantize_state_dict_into(model, {**sd, "extra.weight": torch.zeros(2)})


def test_shape_mismatch_of_a_dense_tensor_names_the_key():
    with torch.device("meta"):
        model = Tiny(quantized=True)
    with pytest.raises(
        CheckpointError, match=r"size mismatch for output.weight: copying a param with shape torch.Size\(\[31, 64\]\)"
    ):
        quantize_state_dict_into(model, {"output.weight": torch.zeros(31, 64)}, strict=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quantize_as_load_on_cuda_holds_one_dense_tensor_at_a_time():
    torch.manual_seed(0)
    dims = dict(vocab=32, dim=1024, hidden=4096, layers=4)
    sd = {k: v.to(torch.bfloat16) for k, v in Tiny(False, **dims).state_dict().items()}
    with torch.device("meta"):
        model = Tiny(True, **dims)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    quantize_state_dict_into(model, sd, device="cuda")
    final = torch.cuda.memory_allocated() - base
    peak = torch.cuda.max_memory_allocated() - base
    dense_total = sum(t.numel() * t.element_size() for t in sd.values())
    largest = max(t.numel() * t.element_size() for t in sd.values())
    assert all(t.is_cuda for t in list(model.parameters()) + list(model.buffers()))
    assert final < dense_total / 3  # ~0.52 of 2 bytes per quantized param
    assert peak < final + 2 * largest  # never more than about one dense tensor beyond the result
    w = sd["layers.3.w2.weight"]
    assert torch.equal(model.layers[3].w2.dequantize().cpu(), dequantize_nf4(quantize_nf4(w)))
