"""`fix_untrained_tokens`: the chat template's tokens whose embedding rows a base checkpoint left at
(near) zero get the mean of the trained rows (and of the untied output's), other rows stay; a LoRA
run with it saves the repaired rows in its merged model; without it nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.real_data import smollm2_dir
from tests.recipes.helpers import make_hf_checkpoint, write_config
from tuner.config import load_config
from tuner.errors import ConfigError
from tuner.models.llama3 import llama3
from tuner.models.smollm2 import smollm2_tokenizer
from tuner.training.lora import LoRAFinetune
from tuner.training.trainer import Trainer
from tuner.training.untrained_tokens import repair_untrained_tokens

IM_START, IM_END, FILE_SEP = 1, 2, 5  # SmolLM2's <|im_start|>, <|im_end|> (in the template), <file_sep> (not)
LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "lora_rank": 4, "lora_alpha": 8}


def _tokenizer():
    return smollm2_tokenizer(str(smollm2_dir() / "tokenizer.json"))


def test_template_rows_near_zero_get_the_mean_of_trained_rows(capsys):
    torch.manual_seed(0)
    decoder = llama3(vocab_size=49152, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=32, max_seq_len=64)
    emb, out = decoder.tok_embeddings.weight, decoder.output.weight
    with torch.no_grad():
        emb[[IM_START, FILE_SEP]] = 0.0
        emb[IM_END] = 1e-20  # near zero counts as untrained too
        out[[IM_START, IM_END, FILE_SEP]] = 0.5  # Llama 3.1's untrained output rows are repeated, not zero
    before_emb, before_out = emb.detach().clone(), out.detach().clone()

    assert repair_untrained_tokens(decoder, _tokenizer()) == [IM_START, IM_END]

    trained = torch.ones(49152, dtype=torch.bool)
    trained[[IM_START, IM_END, FILE_SEP]] = False
    for weight, before in ((emb, before_emb), (out, before_out)):
        mean = before[trained].double().mean(0).float()
        torch.testing.assert_close(weight[IM_START], mean, rtol=0, atol=1e-6)
        torch.testing.assert_close(weight[IM_END], mean, rtol=0, atol=1e-6)
        keep = torch.ones(49152, dtype=torch.bool)
        keep[[IM_START, IM_END]] = False
        assert torch.equal(weight[keep], before[keep])  # <file_sep> is untrained but unused: left alone
    err = capsys.readouterr().err
    assert "fix_untrained_tokens: 2 token(s)" in err and "'<|im_start|>'" in err and "'<|im_end|>'" in err
    assert repair_untrained_tokens(decoder, _tokenizer()) == []  # nothing left to repair


@pytest.fixture(scope="module")
def zero_row_ckpt(tmp_path_factory) -> Path:
    """The tiny SmolLM2-shaped checkpoint with zero embedding rows for <|im_start|> and <|im_end|>."""
    folder = make_hf_checkpoint(tmp_path_factory.mktemp("hf_zero_rows"), initializer_range=0.2)
    weights = load_file(folder / "model.safetensors")
    weights["model.embed_tokens.weight"][[IM_START, IM_END]] = 0.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _lora_trainer(tmp_path: Path, ckpt: Path, **overrides) -> Trainer:
    cfg = write_config(tmp_path / "c.yaml", ckpt, tmp_path / "out", lora=LORA, max_steps_per_epoch=1, **overrides)
    return Trainer(load_config(cfg), LoRAFinetune())


def test_lora_run_saves_the_repaired_rows_in_its_merged_model(zero_row_ckpt, tmp_path):
    trainer = _lora_trainer(tmp_path, zero_row_ckpt, fix_untrained_tokens=True)
    trainer.run()
    assert trainer.repaired_tokens == [IM_START, IM_END]
    saved = load_file(tmp_path / "out" / "step_1" / "model.safetensors")["model.embed_tokens.weight"]
    base = load_file(zero_row_ckpt / "model.safetensors")["model.embed_tokens.weight"]
    trained = base.abs().amax(dim=1) > 0
    for row in (IM_START, IM_END):
        torch.testing.assert_close(saved[row], base[trained].mean(0), rtol=0, atol=1e-6)


def test_without_the_key_the_rows_stay_zero(zero_row_ckpt, tmp_path):
    trainer = _lora_trainer(tmp_path, zero_row_ckpt)
    trainer.setup()
    trainer.close()
    assert trainer.repaired_tokens == []
    assert not trainer.decoder.tok_embeddings.weight[[IM_START, IM_END]].any()


def test_an_adapter_alone_cannot_carry_the_repair(zero_row_ckpt, tmp_path):
    trainer = _lora_trainer(tmp_path, zero_row_ckpt, fix_untrained_tokens=True, save_adapter_weights_only=True)
    with pytest.raises(ConfigError, match="save_adapter_weights_only=False"):
        trainer.setup()
