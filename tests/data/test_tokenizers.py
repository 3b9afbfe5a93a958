"""Tokenizers against the HF reference on the same files: encode/decode and chat templates."""

from __future__ import annotations

import data_hf_chat_templates as T
import pytest
from tests_data_helpers import CONVERSATIONS, hf_chat_ids

from tests.real_data import smollm2_chat_template
from tuner.data.tokenizers import (
    gemma2_tokenizer,
    llama2_tokenizer,
    llama3_tokenizer,
    phi3_mini_tokenizer,
    qwen2_5_tokenizer,
    smollm2_tokenizer,
)
from tuner.errors import TunerError

TEXTS = [
    "Hello world, fine-tuning!",
    "  leading and trailing spaces  ",
    "Line one\nLine two\n\n\tTabbed 12345 numbers",
    "héllo wörld 你好 😀 — unicode",
    "",
]


def _hf_fast(path: str, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=path, **special)


def _check_chat(tok, hf, conversations=CONVERSATIONS):
    for msgs, gen in conversations:
        want = hf_chat_ids(hf, msgs, add_generation_prompt=gen)
        got, mask = tok.tokenize_messages(msgs, add_generation_prompt=gen)
        assert got == want, (msgs, gen, hf.decode(want), tok.decode(got, skip_special_tokens=False))
        assert len(mask) == len(got)
        # Same through a final empty assistant turn.
        if gen:
            got2, _ = tok.tokenize_messages(list(msgs) + [{"role": "assistant", "content": ""}])
            assert got2 == want
    # An unfinished final answer equals HF's continue_final_message (content without trailing
    # whitespace: HF's tag trick keeps trailing spaces that templates which strip content drop).
    msgs = CONVERSATIONS[0][0]
    want = hf_chat_ids(hf, msgs, continue_final_message=True)
    got, _ = tok.tokenize_messages(msgs, add_end_tokens=False)
    assert got == want


def _check_mask(tok, end_token: int):
    """User turns are masked, assistant content and its end-of-turn token are trained."""
    msgs = [
        {"role": "user", "content": "What is two plus two?", "masked": True},
        {"role": "assistant", "content": "Four."},
    ]
    tokens, mask = tok.tokenize_messages(msgs)
    trained = [t for t, m in zip(tokens, mask) if not m]
    assert "Four" in tok.decode(trained)
    assert "two plus" not in tok.decode(trained)
    assert "two plus" in tok.decode([t for t, m in zip(tokens, mask) if m])
    assert end_token in trained, "the end-of-turn token must be trained so the model learns to stop"
    assert mask[0] is True


# ---------------------------------------------------------------- SmolLM2 (real files)
def test_smollm2_real_reference_ids(smollm2_dir):
    tok = smollm2_tokenizer(str(smollm2_dir))
    assert tok.encode("Hello world, fine-tuning!", add_bos=False, add_eos=False) == [
        19556,
        905,
        28,
        4979,
        29,
        40162,
        17,
    ]
    assert tok.encode("Hello world, fine-tuning!")[-1] == tok.eos_id == 2
    assert tok.bos_id is None and tok.pad_id == 2 and set(tok.stop_tokens) == {0, 2}


def test_smollm2_real_matches_hf(smollm2_dir):
    tok = smollm2_tokenizer(str(smollm2_dir / "tokenizer.json"))
    hf = _hf_fast(str(smollm2_dir / "tokenizer.json"), bos_token="<|im_start|>", eos_token="<|im_end|>")
    hf.chat_template = smollm2_chat_template(smollm2_dir)
    for t in TEXTS:
        ids = tok.encode(t, add_bos=False, add_eos=False)
        assert ids == hf(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    _check_chat(tok, hf)
    _check_mask(tok, tok.token_to_id("<|im_end|>"))


# ---------------------------------------------------------------- Qwen2.5 (trained byte-level BPE)
def test_qwen2_5_matches_hf(qwen_files):
    tok = qwen2_5_tokenizer(qwen_files["dir"])
    hf = _hf_fast(qwen_files["json"], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = T.QWEN2_5
    for t in TEXTS + ["<|im_start|>user\nhi<|im_end|>"]:
        ids = tok.encode(t, add_bos=False, add_eos=False)
        assert ids == hf(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    _check_chat(tok, hf)
    tool_conv = [
        {"role": "user", "content": "Weather?"},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "warm"},
        {"role": "assistant", "content": "Sunny and warm."},
    ]
    assert tok.tokenize_messages(tool_conv)[0] == hf_chat_ids(hf, tool_conv)
    _check_mask(tok, tok.token_to_id("<|im_end|>"))
    assert tok.bos_id is None and tok.eos_id == tok.token_to_id("<|im_end|>")
    assert tok.pad_id == tok.token_to_id("<|endoftext|>")


def test_qwen2_5_vocab_merges_equals_tokenizer_json(qwen_files):
    a = qwen2_5_tokenizer(qwen_files["json"])
    b = qwen2_5_tokenizer(qwen_files["vocab"], merges_file=qwen_files["merges"])
    for t in TEXTS:
        assert a.encode(t) == b.encode(t)
    assert a.tokenize_messages(CONVERSATIONS[1][0]) == b.tokenize_messages(CONVERSATIONS[1][0])
    assert a.special_tokens == b.special_tokens


# ---------------------------------------------------------------- Llama 3 (tiktoken ranks file)
def _llama3_hf(path, tok):
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from tuner.data.tokenizers.llama3 import LLAMA3_PATTERN

    specials = sorted(tok.special_tokens, key=tok.special_tokens.get)
    conv = TikTokenConverter(vocab_file=path, pattern=LLAMA3_PATTERN, extra_special_tokens=specials).converted()
    return PreTrainedTokenizerFast(tokenizer_object=conv, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def test_llama3_tiktoken_matches_hf(tiktoken_file):
    tok = llama3_tokenizer(tiktoken_file)
    n_base = tok.backend.num_base_tokens
    assert tok.bos_id == n_base and tok.eos_id == n_base + 1
    assert tok.token_to_id("<|eot_id|>") == n_base + 9
    assert tok.token_to_id("<|start_header_id|>") == n_base + 6
    assert tok.token_to_id("<|reserved_special_token_247|>") == n_base + 255
    assert tok.vocab_size == n_base + 256
    assert set(tok.stop_tokens) == {n_base + 1, n_base + 8, n_base + 9}
    hf = _llama3_hf(tiktoken_file, tok)
    for t in TEXTS:
        ids = tok.encode(t, add_bos=False, add_eos=False)
        assert ids == hf(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == hf.decode(ids)
    assert tok.encode("hi") == [tok.bos_id] + hf("hi", add_special_tokens=False)["input_ids"] + [tok.eos_id]
    hf.chat_template = T.LLAMA3
    _check_chat(tok, hf)
    _check_mask(tok, tok.token_to_id("<|eot_id|>"))


def test_llama3_1_chat_format_matches_hf(tiktoken_file):
    tok = llama3_tokenizer(tiktoken_file, chat_format="llama3_1")
    hf = _llama3_hf(tiktoken_file, tok)
    hf.chat_template = T.LLAMA3_1
    _check_chat(tok, hf)
    tool_conv = [
        {"role": "user", "content": "Weather?"},
        {"role": "ipython", "content": ' {"sky": "sunny"} '},
        {"role": "assistant", "content": "Sunny."},
    ]
    assert tok.tokenize_messages(tool_conv)[0] == hf_chat_ids(hf, tool_conv)


# ---------------------------------------------------------------- SentencePiece: Llama 2
def _sp_hf(sp_model):
    from transformers import LlamaTokenizer

    return LlamaTokenizer(**LlamaTokenizer.convert_to_native_format(vocab_file=sp_model, legacy=True))


def test_llama2_sentencepiece_matches_hf(sp_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=sp_model)
    tok = llama2_tokenizer(sp_model)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.stop_tokens) == (1, 2, 0, [2])
    hf = _sp_hf(sp_model)
    for t in ["Hello world, fine-tuning!", "Line one\nLine two 12345", "héllo wörld 你好 😀", ""]:
        ids = tok.encode(t, add_bos=False, add_eos=False)
        assert ids == sp.encode(t)
        assert ids == hf(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == sp.decode(ids) == t
    assert tok.encode("hi") == [1] + sp.encode("hi") + [2]
    hf.chat_template = T.LLAMA2
    # The Llama 2 template has no generation prompt (a conversation ending with a user turn ends with [/INST]).
    _check_chat(tok, hf)
    _check_mask(tok, 2)


# Mistral's format is checked against Mistral's own reference (mistral_common) on its real v1 and v3
# files in test_chat_formats.py; HF's v0.1/v0.2 template differs from it (docs/internals.md).


# ---------------------------------------------------------------- Gemma 2, Phi-3 (tokenizer.json)
def test_gemma2_matches_hf(gemma_json):
    tok = gemma2_tokenizer(gemma_json)
    hf = _hf_fast(gemma_json, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    hf.chat_template = T.GEMMA2
    no_system = [(m, g) for m, g in CONVERSATIONS if m[0]["role"] != "system"]
    _check_chat(tok, hf, no_system)
    _check_mask(tok, tok.token_to_id("<end_of_turn>"))
    assert tok.stop_tokens == [tok.token_to_id("<eos>"), tok.token_to_id("<end_of_turn>")]
    with_sys = tok.tokenize_messages([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])[0]
    assert with_sys == tok.tokenize_messages([{"role": "user", "content": "Be brief.\n\nHi"}])[0]


def test_phi3_matches_hf(phi3_json):
    tok = phi3_mini_tokenizer(phi3_json)
    hf = _hf_fast(phi3_json, bos_token="<s>", eos_token="<|endoftext|>")
    hf.chat_template = T.PHI3
    for t in TEXTS[:4]:
        ids = tok.encode(t, add_bos=False, add_eos=False)
        assert ids == hf(t, add_special_tokens=False)["input_ids"]
    _check_chat(tok, hf)
    _check_mask(tok, tok.token_to_id("<|end|>"))


# ---------------------------------------------------------------- behaviour and errors
def test_max_seq_len_truncates(qwen_files):
    """Cut as torchtune cuts: the last kept token becomes EOS, not trained on."""
    tok = qwen2_5_tokenizer(qwen_files["json"], max_seq_len=10)
    full, full_mask = qwen2_5_tokenizer(qwen_files["json"]).tokenize_messages(CONVERSATIONS[1][0])
    tokens, mask = tok.tokenize_messages(CONVERSATIONS[1][0])
    assert len(tokens) == len(mask) == 10
    assert tokens[:9] == full[:9] and mask[:9] == full_mask[:9]
    assert tokens[9] == tok.eos_id and mask[9] is True


def test_prompt_template_applied(qwen_files):
    tok = qwen2_5_tokenizer(qwen_files["json"], prompt_template="tuner.data.prompt_templates.QuestionAnswerTemplate")
    plain = qwen2_5_tokenizer(qwen_files["json"])
    msgs = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]
    assert (
        tok.tokenize_messages(msgs)[0]
        == plain.tokenize_messages(
            [{"role": "user", "content": "Question: Why?\n\nAnswer: "}, {"role": "assistant", "content": "Because."}]
        )[0]
    )
    tok2 = qwen2_5_tokenizer(qwen_files["json"], prompt_template={"user": ["Q: ", " A:"]})
    assert "Q: Why? A:" in tok2.decode(tok2.tokenize_messages(msgs)[0])


def test_model_transform_call(qwen_files):
    tok = qwen2_5_tokenizer(qwen_files["json"])
    out = tok({"messages": CONVERSATIONS[0][0], "id": 3})
    assert out["id"] == 3 and out["tokens"] == tok.tokenize_messages(CONVERSATIONS[0][0])[0]


def test_missing_files_raise_clear_errors(tmp_path, sp_model, qwen_files):
    for build, path in [
        (llama2_tokenizer, tmp_path / "nope.model"),
        (llama3_tokenizer, tmp_path / "nope.model"),
        (qwen2_5_tokenizer, tmp_path),
        (smollm2_tokenizer, tmp_path / "tokenizer.json"),
        (gemma2_tokenizer, tmp_path / "x.model"),
    ]:
        with pytest.raises(TunerError, match="not found"):
            build(str(path))
    with pytest.raises(TunerError, match="merges.txt not found"):
        qwen2_5_tokenizer(qwen_files["vocab"], merges_file=str(tmp_path / "merges.txt"))
    # A SentencePiece file is not a tiktoken ranks file.
    with pytest.raises(TunerError, match="tiktoken"):
        llama3_tokenizer(sp_model)
    # The Qwen tokenizer lacks Gemma's turn tokens.
    with pytest.raises(TunerError, match="<start_of_turn>"):
        gemma2_tokenizer(qwen_files["json"])


def test_bad_messages_raise(qwen_files):
    tok = qwen2_5_tokenizer(qwen_files["json"])
    with pytest.raises(TunerError, match="unknown message role 'bot'"):
        tok.tokenize_messages([{"role": "bot", "content": "x"}])
    with pytest.raises(TunerError, match="Two consecutive user messages"):
        tok.tokenize_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    with pytest.raises(TunerError, match="at least length 1, but got 0 messages"):
        tok.tokenize_messages([])
