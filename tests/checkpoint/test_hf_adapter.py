"""HF runs with an adapter: PEFT-format files that peft loads, and resume as base + adapter."""

from __future__ import annotations

import json

import torch

from tests.checkpoint.conftest import make_hf_model, save_hf_model
from tuner.checkpoint import HFCheckpointer

RANK, ALPHA = 4, 8.0


def _adapter(c) -> dict[str, torch.Tensor]:
    """A random rank-RANK adapter on q_proj and v_proj for every layer of the HF config ``c``."""
    dim, kv_dim = c.hidden_size, c.num_key_value_heads * c.hidden_size // c.num_attention_heads
    g = torch.Generator().manual_seed(3)
    sd = {}
    for i in range(c.num_hidden_layers):
        for mod, out in (("q_proj", dim), ("v_proj", kv_dim)):
            sd[f"layers.{i}.attn.{mod}.lora_a.weight"] = torch.randn(RANK, dim, generator=g) * 0.1
            sd[f"layers.{i}.attn.{mod}.lora_b.weight"] = torch.randn(out, RANK, generator=g) * 0.1
    return sd


def test_adapter_saved_in_peft_format_and_resumed(tmp_path, tokens):
    import peft
    import transformers

    hf = make_hf_model("llama")
    src = save_hf_model(hf, tmp_path / "src")
    adapter = _adapter(hf.config)
    ckpt = HFCheckpointer(src, None, "LLAMA3", tmp_path / "out")
    base = ckpt.load_checkpoint()["model"]
    lora_config = {"lora_rank": RANK, "lora_alpha": ALPHA, "lora_attn_modules": ["q_proj", "v_proj"]}
    out = ckpt.save_checkpoint(
        {"adapter": adapter, "adapter_config": lora_config, "training_state": {"global_step": 6}},
        step=6,
        epoch=0,
        adapter_only=True,
    )
    assert {"adapter_model.safetensors", "adapter_config.json", "training_state.pt", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(src)

    # reference: the base with W + alpha/r * B @ A merged by hand
    merged = make_hf_model("llama")
    with torch.no_grad():
        for i in range(hf.config.num_hidden_layers):
            for mod in ("q_proj", "v_proj"):
                w = merged.model.layers[i].self_attn.get_submodule(mod).weight
                a, b = adapter[f"layers.{i}.attn.{mod}.lora_a.weight"], adapter[f"layers.{i}.attn.{mod}.lora_b.weight"]
                w += (ALPHA / RANK) * b @ a
        expected = merged(tokens).logits
    peft_model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(src), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(tokens).logits, expected, atol=1e-5, rtol=1e-5)

    resumed = HFCheckpointer(src, None, "LLAMA3", tmp_path / "out", resume_from_checkpoint=True).load_checkpoint()
    assert resumed["training_state"]["global_step"] == 6
    assert resumed["adapter"].keys() == adapter.keys()
    assert all(torch.equal(resumed["adapter"][k], v) for k, v in adapter.items())
    assert all(torch.equal(resumed["model"][k], v) for k, v in base.items())

    # a full save of an adapter run: a loadable merged model folder plus the adapter
    merged_sd = HFCheckpointer(src, None, "LLAMA3", tmp_path / "x").load_checkpoint()["model"]
    for k in list(merged_sd):
        if k.endswith(("q_proj.weight", "v_proj.weight")):
            prefix = k[: -len("weight")]
            merged_sd[k] = (
                merged_sd[k] + (ALPHA / RANK) * adapter[prefix + "lora_b.weight"] @ adapter[prefix + "lora_a.weight"]
            )
    full = ckpt.save_checkpoint(
        {"model": merged_sd, "adapter": adapter, "adapter_config": lora_config, "training_state": {"global_step": 7}},
        step=7,
        epoch=0,
    )
    assert (full / "adapter" / "adapter_config.json").is_file() and not (full / "adapter_config.json").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(full).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(tokens).logits, expected, atol=1e-5, rtol=1e-5)
    peft_model = peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(src), full / "adapter"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(tokens).logits, expected, atol=1e-5, rtol=1e-5)
    # resuming from the full save still means base + adapter
    resumed = HFCheckpointer(src, None, "LLAMA3", tmp_path / "out", resume_from_checkpoint=full).load_checkpoint()
    assert all(torch.equal(resumed["model"][k], v) for k, v in base.items())
    assert all(torch.equal(resumed["adapter"][k], v) for k, v in adapter.items())


def test_adapter_only_folder_loads_with_automodel(tmp_path, tokens):
    """An adapter-only step folder names its base, so AutoModelForCausalLM loads base + adapter."""
    import transformers

    hf = make_hf_model("llama")
    src = save_hf_model(hf, tmp_path / "src")
    adapter = _adapter(hf.config)
    for k in adapter:
        if "lora_b" in k:
            adapter[k] = torch.zeros_like(adapter[k])  # identity adapter: logits equal the base
    ckpt = HFCheckpointer(src, None, "LLAMA3", tmp_path / "out")
    out = ckpt.save_checkpoint(
        {"adapter": adapter, "adapter_config": {"lora_rank": RANK, "lora_alpha": ALPHA}}, 1, 0, adapter_only=True
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, hf(tokens).logits)
