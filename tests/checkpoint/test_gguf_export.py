"""GGUF export (`tuner.checkpoint.gguf_write`): for every family a tiny tuner model, written as GGUF, reads
back in transformers (``from_pretrained(..., gguf_file=...)``) with the tuner model's logits (F32 within
1e-4; Q8_0 equal to the model whose weights went through gguf's reference Q8_0 round trip, and each
weight within the Q8_0 bound) and a tokenizer with the same ids and chat-template ids as the HF one.

The tiny configs are the released models' shapes in miniature, with what transformers' GGUF reader
fills in from its defaults set to those defaults (Gemma 2's soft-capping 50 / 30 and
query_pre_attn_scalar = head_dim = 256, Qwen3's head_dim 128): llama.cpp reads them from the file
(checked in the metadata), transformers' reader does not.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data import data_hf_chat_templates as templates
from tests.data.tiny_tokenizers import (
    _with_added,
    train_bytelevel_bpe,
    write_phi3_json,
    write_qwen_files,
    write_sp_model,
)
from tests.models.hf_tiny import tiny_hf_model
from tuner.checkpoint.gguf_write import llama3_rope_factors, write_gguf
from tuner.checkpoint.hf_config import build_model_from_hf_config, hf_config_from_model
from tuner.checkpoint.hf_keys import hf_to_tuner
from tuner.errors import CheckpointError, ConfigError

gguf = pytest.importorskip("gguf")  # the dev extra installs it; CI has it
transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

TEXTS = ["Hello world, fine-tuning! héllo wörld 你好 😀", "  two  spaces\nand 12345 digits", "system user assistant"]
MESSAGES = [
    {"role": "user", "content": "Hello world, how are you?"},
    {"role": "assistant", "content": "Fine-tuning 123!"},
    {"role": "user", "content": "héllo"},
]

_SP = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", tokenizer_class="LlamaTokenizer")
_LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
_QWEN = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, tokenizer_class="Qwen2Tokenizer")


def _llama3_tokenizer(folder: Path) -> None:
    from tokenizers import Regex, pre_tokenizers, processors

    from tuner.data.tokenizers.llama3 import LLAMA3_PATTERN

    tok = train_bytelevel_bpe(vocab_size=600)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.normalizer = None
    tok = _with_added(tok, [(t, True) for t in _LLAMA3_SPECIALS])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1", special_tokens=[("<|begin_of_text|>", bos)]
    )
    tok.save(str(folder / "tokenizer.json"))


_TRAINED: dict[str, Path] = {}


def _trained(kind: str, make) -> Path:
    """Train each tiny tokenizer once per session (a SentencePiece training takes seconds)."""
    if kind not in _TRAINED or not _TRAINED[kind].exists():
        folder = Path(tempfile.mkdtemp(prefix=f"gguf_tok_{kind}_"))
        make(folder)
        _TRAINED[kind] = folder
    return _TRAINED[kind]


def _copy_trained(kind: str, make, folder: Path) -> None:
    for f in _trained(kind, make).iterdir():
        shutil.copy(f, folder / f.name)


def _tokenizer_folder(family: str, folder: Path) -> Path:
    """An HF tokenizer folder for ``family``: tiny tokenizer files + tokenizer_config.json with the
    family's published chat template."""
    if family in ("llama2", "mistral"):
        _copy_trained("sp", lambda f: write_sp_model(f / "tokenizer.model"), folder)
        template = templates.LLAMA2 if family == "llama2" else templates.MISTRAL
        config = dict(_SP, add_bos_token=True, chat_template=template)
    elif family == "gemma2":
        write_sp_model(folder / "tokenizer.model", gemma=True)
        config = dict(
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
            add_bos_token=True,
            tokenizer_class="GemmaTokenizer",
            chat_template=templates.GEMMA2,
        )
    elif family == "phi3":
        _copy_trained("sp", lambda f: write_sp_model(f / "tokenizer.model"), folder)
        write_phi3_json(folder / "tokenizer.json", str(folder / "tokenizer.model"))
        config = dict(_SP, eos_token="<|endoftext|>", pad_token="<|endoftext|>", add_bos_token=False)
        config["chat_template"] = templates.PHI3
    elif family.startswith("llama3"):
        _copy_trained("llama3", _llama3_tokenizer, folder)
        config = dict(
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            tokenizer_class="PreTrainedTokenizerFast",
            chat_template=templates.LLAMA3,
        )
    elif family in ("qwen2_5", "qwen3"):
        _copy_trained("qwen", write_qwen_files, folder)
        config = dict(_QWEN, chat_template=templates.QWEN2_5)
    else:
        raise AssertionError(family)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


#: family -> (hf_tiny row, model_type, config overrides for what transformers' GGUF reader takes from its defaults)
CASES = {
    "llama2": ("llama2", "LLAMA2", {}),
    "llama3": ("llama3", "LLAMA3", {}),
    "llama3_1": ("llama3_1", "LLAMA3_1", {}),
    "llama3_2": ("llama3_2", "LLAMA3_2", {}),
    "llama3_3": ("llama3_1", "LLAMA3_3", {}),
    "mistral": ("mistral", "MISTRAL", {"sliding_window": None}),
    "qwen2_5": ("qwen2_5", "QWEN2", {}),
    "qwen3": ("qwen3", "QWEN3", {"head_dim": 128}),
    "gemma2": (
        "gemma2",
        "GEMMA2",
        dict(head_dim=256, query_pre_attn_scalar=256, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    ),
    "phi3": ("phi3", "PHI3_MINI", {"sliding_window": 16}),
}


def _tuner_model(family: str, vocab_size: int):
    row, model_type, overrides = CASES[family]
    hf, config, _ = tiny_hf_model(row, vocab_size=vocab_size, **overrides)
    model = build_model_from_hf_config(config, model_type)
    model.load_state_dict(hf_to_tuner(hf.state_dict(), model_type, config), strict=False)
    return model.eval(), model_type, config


def _read_back(path: Path, config: dict):
    """transformers' model of the GGUF file. Its reader has no rope scaling for the llama architecture
    (llama.cpp reads the rope_freqs tensor, checked in test_metadata_holds_what_llama_cpp_reads), so for
    Llama 3.1-style models the config it reads gets the scaling back."""
    kwargs = {}
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type") == "llama3":
        read = transformers.AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        read.rope_parameters = {**read.rope_parameters, **rope}
        kwargs["config"] = read
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, **kwargs
    )
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (tuner model, model_type, HF config, tokenizer folder, F32 GGUF path); built once."""
    cache: dict[str, tuple] = {}

    def get(family: str):
        if family not in cache:
            folder = _tokenizer_folder(family, tmp_path_factory.mktemp(family))
            size = len(transformers.AutoTokenizer.from_pretrained(folder))
            model, model_type, config = _tuner_model(family, size)
            out = tmp_path_factory.mktemp(f"{family}_gguf")  # apart from the HF tokenizer files
            path = write_gguf(model, model_type, folder, out / "model-f32.gguf", "f32").path
            cache[family] = (model, model_type, config, folder, path)
        return cache[family]

    return get


def _tokens(vocab: int, length: int = 12) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(1))


def _reference_ids(family: str, ref, folder: Path, text: str) -> list[int]:
    """The HF tokenizer's ids; for Phi-3 SentencePiece's own (what llama.cpp runs): the tokenizer.json
    transformers converts for it differs from SentencePiece on text that starts with spaces."""
    if family != "phi3":
        return ref(text).input_ids
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).encode(text)


@pytest.mark.parametrize("family", sorted(CASES))
def test_f32_gguf_reads_back_in_transformers_with_the_same_logits_and_tokenizer(exported, family):
    model, model_type, config, folder, path = exported(family)
    back = _read_back(path, config)
    ids = _tokens(config["vocab_size"])
    with torch.no_grad():
        ours, theirs = model(ids), back(ids).logits
    assert ours.abs().max() > 0.1  # the logits are not trivially small
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()

    ref = transformers.AutoTokenizer.from_pretrained(folder)
    read = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in TEXTS:
        assert read(text).input_ids == _reference_ids(family, ref, folder, text), text
    assert read.chat_template == ref.chat_template
    if family != "phi3":  # transformers' GGUF Phi-3 tokenizer prepends "▁" after each special token
        chat = read.apply_chat_template(MESSAGES, add_generation_prompt=True)
        assert chat["input_ids"] == ref.apply_chat_template(MESSAGES, add_generation_prompt=True)["input_ids"]


def test_metadata_holds_what_llama_cpp_reads(exported):
    """The keys transformers' reader skips but llama.cpp needs: Gemma 2's soft-capping, sliding window and
    key length; Llama 3.1's rope factors (llama.cpp divides each rotary frequency by one)."""
    _, _, config, _, path = exported("gemma2")
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["gemma2.attn_logit_softcapping"].contents() == 50.0
    assert fields["gemma2.final_logit_softcapping"].contents() == 30.0
    assert fields["gemma2.attention.sliding_window"].contents() == config["sliding_window"]
    assert fields["gemma2.attention.key_length"].contents() == 256

    model, model_type, config, _, path = exported("llama3_1")
    reader = gguf.GGUFReader(str(path))
    factors = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data
    assert np.array_equal(factors, llama3_rope_factors(hf_config_from_model(model, model_type)))
    head_dim, base = config["head_dim"], config["rope_parameters"]["rope_theta"]
    plain = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    scaled = plain / torch.from_numpy(factors)  # what llama.cpp computes
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](transformers.LlamaConfig(**config), "cpu")
    assert torch.allclose(scaled, hf_inv_freq.float(), rtol=1e-6)
    assert not torch.allclose(scaled, plain)  # the scaling matters at this length


def _q8_0_round_trip(w: torch.Tensor) -> torch.Tensor:
    Q8 = gguf.GGMLQuantizationType.Q8_0
    return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w.numpy(), Q8), Q8).copy())


@pytest.mark.parametrize("family", ["llama3_2", "qwen2_5"])
def test_q8_0_is_the_reference_quantization_within_its_bound(exported, family, tmp_path):
    """Q8_0 stores each block of 32 weights as int8 times one fp16 scale d = max|w| / 127, so every weight
    is off by at most d / 2, plus |q| <= 127 times the fp16 rounding of d (2^-11 d):
    |w - q| <= max|block| / 127 * (1/2 + 127 * 2^-11) + 1e-7 (0.44% of the block's largest weight).
    transformers' read-back gives the logits of the tuner model with exactly those weights (within 1e-4);
    the change from the unquantized logits is printed (measured, not bounded)."""
    model, model_type, config, folder, _ = exported(family)
    path = write_gguf(model, model_type, folder, tmp_path / "model-q8_0.gguf", "q8_0").path
    reader = gguf.GGUFReader(str(path))
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["token_embd.weight"] == "Q8_0" and kinds["blk.0.ffn_down.weight"] == "Q8_0"
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 1} == {"F32"}  # norms, biases
    assert family != "qwen2_5" or kinds["blk.0.attn_q.bias"] == "F32"

    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in quantized.named_parameters():
            if p.ndim == 2:
                q = _q8_0_round_trip(p.detach())
                blocks = p.detach().reshape(-1, 32)
                bound = blocks.abs().amax(dim=1, keepdim=True) / 127 * (0.5 + 127 * 2**-11) + 1e-7
                assert ((q.reshape(-1, 32) - blocks).abs() <= bound).all(), name
                p.copy_(q)
    ids = _tokens(config["vocab_size"])
    with torch.no_grad():
        theirs, ours_q, ours = _read_back(path, config)(ids).logits, quantized(ids), model(ids)
    assert torch.allclose(theirs, ours_q, atol=1e-4), (theirs - ours_q).abs().max()
    print(f"{family} Q8_0: max |logit change| {(theirs - ours).abs().max():.3g} of max |logit| {ours.abs().max():.3g}")


@pytest.mark.parametrize("tensor_type", ["f16", "bf16"])
def test_f16_and_bf16_hold_the_weights_rounded(exported, tensor_type, tmp_path):
    model, model_type, _, folder, _ = exported("llama3_2")
    path = write_gguf(model, model_type, folder, tmp_path / f"m-{tensor_type}.gguf", tensor_type).path
    reader = gguf.GGUFReader(str(path))
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert tensor.tensor_type.name == tensor_type.upper()
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    want = model.tok_embeddings.weight.detach().to(torch.float16 if tensor_type == "f16" else torch.bfloat16)
    assert np.array_equal(data, want.float().numpy())


def test_bad_inputs_name_the_fix(exported, tmp_path):
    model, model_type, _, folder, _ = exported("llama3_2")
    with pytest.raises(ConfigError, match="unknown GGUF tensor type 'q4_k'") as e:
        write_gguf(model, model_type, folder, tmp_path / "x.gguf", "q4_k")
    assert "f32, f16, bf16, q8_0" in e.value.fix
    with pytest.raises(CheckpointError, match="no tokenizer.json or SentencePiece tokenizer.model") as e:
        write_gguf(model, model_type, tmp_path, tmp_path / "x.gguf", "f32")
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".x.gguf*"))


def test_llama3_tiktoken_file_becomes_a_byte_level_vocabulary(tmp_path):
    """Meta's Llama 3 folder has only the tiktoken ranks file: the GGUF vocabulary (ranks spelled
    byte-level, merges recovered from the ranks, the tokenizer's 256 special tokens) tokenizes in
    transformers' reader as tuner's tiktoken tokenizer does."""
    from tests.data.tiny_tokenizers import write_tiktoken_ranks
    from tuner.models.llama3 import llama3_tokenizer

    folder = tmp_path / "meta"
    folder.mkdir()
    tokenizer = llama3_tokenizer(write_tiktoken_ranks(folder / "tokenizer.model"))
    model, model_type, _ = _tuner_model("llama3", tokenizer.vocab_size)
    with pytest.raises(CheckpointError, match="tiktoken ranks file") as e:
        write_gguf(model, model_type, folder, tmp_path / "x.gguf", "f32")
    assert "tokenizer:" in e.value.fix
    path = write_gguf(model, model_type, folder, tmp_path / "out" / "m.gguf", "f32", tokenizer=tokenizer).path
    read = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in [*TEXTS, "<|start_header_id|>user<|end_header_id|>\n\nHi 1234<|eot_id|>"]:
        assert read(text).input_ids == tokenizer.encode(text, add_bos=True, add_eos=False), text
