"""`tune run export`: base + PEFT adapter -> one GGUF file holding the merged weights (the weights PEFT's
``merge_and_unload`` gives, in llama.cpp's layout) and an Ollama Modelfile whose Go template renders
each chat format's turns as the family's HF Jinja template does; bad inputs give one clear error.

The model is a tiny SmolLM2-layout Llama with a tiny ChatML tokenizer (the per-family read-back in
transformers is tests/checkpoint/test_gguf_export.py; the real quickstart model's is the README test).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jinja2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.data import data_hf_chat_templates as templates
from tests.data.tiny_tokenizers import write_qwen_files
from tests.real_data import smollm2_chat_template
from tests.recipes.helpers import TINY, model_node, tune_in_process
from tuner.checkpoint.gguf_write import _permute
from tuner.data.tokenizers._chatml import ChatMLFormat
from tuner.data.tokenizers.gemma2 import Gemma2Format
from tuner.data.tokenizers.llama2 import Llama2Format
from tuner.data.tokenizers.llama3 import Llama3Format
from tuner.data.tokenizers.mistral import MistralFormat
from tuner.data.tokenizers.phi3 import Phi3Format
from tuner.errors import ConfigError
from tuner.generation.gguf_export import export_gguf
from tuner.generation.modelfile import GO_TEMPLATES, modelfile_text

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny SmolLM2-layout checkpoint with a tiny ChatML tokenizer and SmolLM2's chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("export_ckpt")
    write_qwen_files(folder)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size() + 10  # padded, as Qwen's is
    torch.manual_seed(0)
    config = LlamaConfig(**{**TINY, "vocab_size": vocab, "bos_token_id": None, "eos_token_id": None})
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer = {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "chat_template": smollm2_chat_template()}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    return folder


@pytest.fixture(scope="module")
def adapter(ckpt, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("export_adapter") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "k_proj", "down_proj"])
    get_peft_model(base, lora).save_pretrained(folder)
    return folder


def export_cfg(ckpt: Path, adapter: Path | None, out: Path, **overrides) -> dict:
    model = {**model_node(), "vocab_size": json.loads((ckpt / "config.json").read_text())["vocab_size"]}
    cfg = {
        "model": model,
        "checkpointer": {
            "_component_": "tuner.checkpoint.HFCheckpointer",
            "checkpoint_dir": str(ckpt),
            "checkpoint_files": ["model.safetensors"],
            "model_type": "SMOLLM2",
        },
        "tokenizer": {"_component_": "tuner.models.smollm2.smollm2_tokenizer", "path": str(ckpt / "tokenizer.json")},
        "adapter_dir": str(adapter) if adapter else None,
        "output_file": str(out),
        "tensor_type": "f32",
        "device": "cpu",
    }
    cfg.update(overrides)
    return cfg


def _tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(str(path))
    return {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        for t in reader.tensors
    }


def test_export_writes_the_merged_weights_and_a_modelfile(ckpt, adapter, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "tuned-f32.gguf"
    result = export_gguf(OmegaConf.create(export_cfg(ckpt, adapter, out)))
    assert result.gguf.path == out and sorted(p.name for p in tmp_path.iterdir()) == [
        "tuned-f32.Modelfile",
        "tuned-f32.gguf",
    ]
    base = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().state_dict()
    written = _tensors(out)
    q = _permute(merged["model.layers.0.self_attn.q_proj.weight"].numpy(), 4)
    k = _permute(merged["model.layers.1.self_attn.k_proj.weight"].numpy(), 2)
    np.testing.assert_allclose(written["blk.0.attn_q.weight"], q, atol=1e-6)
    np.testing.assert_allclose(written["blk.1.attn_k.weight"], k, atol=1e-6)
    down = merged["model.layers.1.mlp.down_proj.weight"].numpy()
    np.testing.assert_allclose(written["blk.1.ffn_down.weight"], down, atol=1e-6)
    base_down = AutoModelForCausalLM.from_pretrained(ckpt).state_dict()["model.layers.1.mlp.down_proj.weight"]
    assert not np.allclose(written["blk.1.ffn_down.weight"], base_down.numpy(), atol=1e-3)  # the adapter is in
    assert "output.weight" not in written  # tied: llama.cpp uses token_embd

    modelfile = (tmp_path / "tuned-f32.Modelfile").read_text()
    assert "FROM ./tuned-f32.gguf\n" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and 'PARAMETER stop "<|endoftext|>"' in modelfile
    assert f'TEMPLATE """{GO_TEMPLATES[ChatMLFormat]}"""' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile


def _go_render(template: str, messages: list[dict]) -> str:
    """Go text/template for the subset the Modelfile templates use: ``range .Messages``, ``if eq .Role
    "x"`` / ``else`` / ``end``, ``.Role``, ``.Content``, and the ``{{-`` / ``-}}`` whitespace trims."""
    parts = re.split(r"(\{\{-?\s.*?\s-?\}\})", template)
    for i in range(1, len(parts), 2):  # trims eat the neighbouring text's whitespace
        if parts[i].startswith("{{-"):
            parts[i - 1] = parts[i - 1].rstrip()
        if parts[i].endswith("-}}"):
            parts[i + 1] = parts[i + 1].lstrip()
    tokens = [(i % 2 == 1, p.strip("{}-").strip() if i % 2 else p) for i, p in enumerate(parts)]

    def run(pos: int, message: dict | None, out: list[str], emit: bool) -> int:
        while pos < len(tokens):
            is_action, text = tokens[pos]
            pos += 1
            if not is_action:
                out.append(text if emit else "")
            elif text == "range .Messages":
                end = pos
                for m in messages:
                    end = run(pos, m, out, emit)
                pos = end if messages else run(pos, None, [], False)
            elif text.startswith("if eq .Role "):
                taken = emit and message["role"] == json.loads(text.split(" ", 3)[3])
                pos = run(pos, message, out, taken)
                if tokens[pos - 1][1] == "else":
                    pos = run(pos, message, out, emit and not taken)
            elif text in ("end", "else"):
                return pos
            elif text in (".Role", ".Content"):
                out.append(message[text[1:].lower()] if emit else "")
            else:
                raise AssertionError(f"unsupported action {text!r}")
        return pos

    out: list[str] = []
    run(0, None, out, True)
    return "".join(out)


TURNS = [
    {"role": "user", "content": "What is 3 times 4?"},
    {"role": "assistant", "content": "ANSWER: 12"},
    {"role": "user", "content": "And 5 times 6?"},
]
SYSTEM = [{"role": "system", "content": "Answer briefly."}]

#: chat format -> (its HF template, BOS the template writes (llama.cpp adds it), conversation)
CASES = {
    ChatMLFormat: (smollm2_chat_template(), "", SYSTEM + TURNS),
    Llama3Format: (templates.LLAMA3, "<|begin_of_text|>", SYSTEM + TURNS),
    Gemma2Format: (templates.GEMMA2, "<bos>", TURNS),
    Phi3Format: (templates.PHI3, "", SYSTEM + TURNS),
    Llama2Format: (templates.LLAMA2, "<s>", TURNS),
    MistralFormat: (templates.MISTRAL, "<s>", TURNS),
}


@pytest.mark.parametrize("chat_format", list(CASES), ids=lambda f: f.__name__)
def test_modelfile_template_renders_like_the_hf_chat_template(chat_format):
    hf_template, bos, messages = CASES[chat_format]

    def raise_exception(message):
        raise ValueError(message)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    hf = env.from_string(hf_template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token="</s>", raise_exception=raise_exception
    )
    assert bos + _go_render(GO_TEMPLATES[chat_format], messages) == hf


def test_modelfile_without_a_known_template_keeps_from_and_stops():
    text = modelfile_text("m.gguf", None, ["</s>", "</s>", 'a"b'])
    assert "TEMPLATE" not in text and "FROM ./m.gguf" in text
    assert text.count('PARAMETER stop "</s>"') == 1 and 'PARAMETER stop "a\\"b"' in text


def test_bad_inputs_are_refused_before_anything_is_written(ckpt, tmp_path):
    existing = tmp_path / "old.gguf"
    existing.write_bytes(b"keep")
    cases = [
        (dict(output_file=None), "output_file is not set"),
        (dict(output_file=str(tmp_path / "model.bin")), "does not end in .gguf"),
        (dict(output_file=str(existing)), "already exists; nothing was written"),
        (dict(tensor_type="q4_k"), "tensor_type"),
        (dict(tokenizer_dir=str(tmp_path / "empty")), "no tokenizer.json or SentencePiece tokenizer.model"),
    ]
    (tmp_path / "empty").mkdir()
    from tuner.errors import TunerError

    for overrides, message in cases:
        with pytest.raises(TunerError, match=re.escape(message)) as e:
            export_gguf(OmegaConf.create(export_cfg(ckpt, None, tmp_path / "new.gguf", **overrides)))
        assert e.value.fix, overrides
    assert existing.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "old.gguf"]


def test_a_family_without_a_gguf_architecture_is_refused(ckpt, tmp_path):
    import dataclasses

    from tuner.models.families import family, register, unregister

    spec = dataclasses.replace(family("smollm2"), name="tiny_neox", model_type="TINY_NEOX", hf_model_type="gpt_neox")
    register(spec)
    try:
        cfg = export_cfg(ckpt, None, tmp_path / "x.gguf")
        cfg["checkpointer"]["model_type"] = "TINY_NEOX"
        with pytest.raises(ConfigError, match="no GGUF architecture that llama.cpp and transformers both read") as e:
            export_gguf(OmegaConf.create(cfg))
        assert "smollm2" in e.value.fix and "tune run merge" in e.value.fix
    finally:
        unregister(spec.name)
    assert not (tmp_path / "x.gguf").exists()


def test_cli_error_is_one_line_with_exit_2(ckpt, tmp_path):
    existing = tmp_path / "old.gguf"
    existing.write_bytes(b"keep")
    cfg = tmp_path / "export.yaml"
    cfg.write_text(json.dumps(export_cfg(ckpt, None, existing)))
    proc = tune_in_process("run", "export", "--config", str(cfg), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "error: " in proc.stderr and "already exists" in proc.stderr and "Traceback" not in proc.stderr


def test_without_the_gguf_package_the_error_names_the_extra(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf raises ImportError
    from tuner.errors import TunerError

    with pytest.raises(TunerError, match="writing GGUF files needs the 'gguf' package") as e:
        export_gguf(OmegaConf.create(export_cfg(ckpt, None, tmp_path / "x.gguf")))
    assert "pip install 'tuner[gguf]'" in e.value.fix
    assert not list(tmp_path.iterdir())
