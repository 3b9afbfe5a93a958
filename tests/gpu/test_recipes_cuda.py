"""The training recipes on a CUDA GPU (run on the GPU machine; skipped elsewhere; no tokenizer or data
files): full, LoRA and QLoRA from a real HF folder, streamed in shard by shard, saved folders load in
transformers with the trained model's logits; compiled bf16 training runs and learns."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.recipes.helpers import LORA, SYNTHETIC, checkpointer_node, make_hf_checkpoint, optimizer_node, write_config

pytestmark = pytest.mark.gpu


def _config(tmp_path, ckpt, lora, **overrides):
    out = tmp_path / "out"
    settings = {
        "device": "cuda",
        "dataset": SYNTHETIC,
        "tokenizer": {"_component_": "benchmarks.NullTokenizer"},
        "max_steps_per_epoch": 3,
        **overrides,
    }
    path = write_config(tmp_path / "cfg.yaml", ckpt, out, lora=lora, **settings)
    return OmegaConf.load(path), out


@pytest.mark.parametrize("kind", ["full", "lora", "qlora"])
def test_cuda_run_saves_a_folder_transformers_loads_with_the_same_logits(tmp_path, kind):
    from transformers import AutoModelForCausalLM

    from tuner.training.full import FullFinetune
    from tuner.training.lora import LoRAFinetune
    from tuner.training.trainer import Trainer

    ckpt = make_hf_checkpoint(tmp_path / "ckpt", initializer_range=0.2, max_shard_size="2MB", with_tokenizer=False)
    lora = None if kind == "full" else {**LORA, "quantize_base": kind == "qlora"}
    cfg, out = _config(
        tmp_path,
        ckpt,
        lora,
        dtype="fp32",
        enable_activation_checkpointing=kind == "qlora",
        checkpointer=checkpointer_node(ckpt, tmp_path / "out", files=None),
    )
    trainer = Trainer(cfg, FullFinetune() if kind == "full" else LoRAFinetune())
    trainer.run()
    tokens = torch.randint(0, 49152, (2, 33), device="cuda")
    trainer.decoder.eval()
    with torch.no_grad():
        ours = trainer.decoder(tokens).float()
        hf = AutoModelForCausalLM.from_pretrained(out / "step_3", torch_dtype=torch.float32).cuda()
        theirs = hf(tokens).logits
    assert torch.allclose(ours, theirs, atol=2e-3), (ours - theirs).abs().max()


def test_compiled_bf16_lora_learns(tmp_path):
    from tuner.training.lora import LoRAFinetune
    from tuner.training.trainer import Trainer

    ckpt = make_hf_checkpoint(tmp_path / "ckpt", initializer_range=0.2, with_tokenizer=False)
    cfg, out = _config(
        tmp_path,
        ckpt,
        LORA,
        dtype="bf16",
        compile=True,
        max_steps_per_epoch=12,
        batch_size=4,
        dataset={**SYNTHETIC, "num_samples": 4, "seed": 1},
        epochs=12,
        optimizer=optimizer_node(1e-2),
    )
    Trainer(cfg, LoRAFinetune()).run()
    losses = [json.loads(line)["loss"] for line in (out / "logs" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and losses[-1] < losses[0] - 1.0, losses
