"""Qwen3's shipped LoRA config runs end to end on CPU (`tune run`, pointed at a tiny random Qwen3
checkpoint and Qwen3's real tokenizer), and the adapter it saves loads in PEFT with tuner's logits."""

from __future__ import annotations

import json

import torch

from tests.data.tokenizer_files import qwen3_tokenizer_dir
from tests.models.hf_tiny import tiny_hf_kwargs
from tuner.checkpoint.hf_config import builder_kwargs_from_hf_config
from tuner.cli.run import run_recipe

ROWS = [{"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a + b}"} for a in range(4) for b in range(3)]


def test_qwen3_lora_config_trains_and_its_adapter_loads_in_peft(tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    # hf_tiny's Qwen3 layout with Qwen3's vocabulary (its real tokenizer); weights large enough to train visibly
    config = Qwen3Config(**tiny_hf_kwargs("qwen3", vocab_size=151_936, tie_word_embeddings=True, initializer_range=0.2))
    Qwen3ForCausalLM(config).save_pretrained(tmp_path / "ckpt")
    (tmp_path / "data.json").write_text(json.dumps(ROWS))
    dims = builder_kwargs_from_hf_config(config.to_dict(), "QWEN3")
    dims.pop("_component_")
    overrides = [
        f"output_dir={tmp_path / 'out'}",
        "model._component_=tuner.models.qwen3.lora_qwen3",
        *(f"model.{k}={json.dumps(v)}" for k, v in dims.items()),
        f"tokenizer.path={qwen3_tokenizer_dir() / 'tokenizer.json'}",
        "tokenizer.max_seq_len=64",
        f"checkpointer.checkpoint_dir={tmp_path / 'ckpt'}",
        "dataset.source=json",
        f"dataset.data_files={tmp_path / 'data.json'}",
        "dataset.split=train",
        "batch_size=4",
        "gradient_accumulation_steps=1",
        "max_steps_per_epoch=2",
        "device=cpu",
        "dtype=fp32",
        "metric_logger._component_=tuner.training.metric_logging.StdoutLogger",
        "~metric_logger.log_dir",
    ]
    code = run_recipe(["lora_finetune_single_device", "--config", "qwen3/0.6B_lora_single_device", *overrides])
    assert code == 0, capsys.readouterr().err[-3000:]

    step = tmp_path / "out" / "step_2"
    merged = AutoModelForCausalLM.from_pretrained(step, torch_dtype=torch.float32).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt"), step / "adapter").eval()
    tokens = torch.randint(0, 151_936, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (peft(tokens).logits - merged(tokens).logits).abs().max() <= 1e-4
    adapter_config = json.loads((step / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_config["target_modules"]) == [
        "down_proj",
        "gate_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    trained_b = [p for n, p in peft.named_parameters() if "lora_B" in n]
    assert trained_b and all(p.abs().sum() > 0 for p in trained_b)  # two steps moved B away from its zero init
