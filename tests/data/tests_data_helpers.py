"""Shared conversations and the HF chat-template reference call."""

from __future__ import annotations

CONVERSATIONS = [
    ([{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}], False),
    (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "  What is 2+2?\n"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And héllo 你好?"},
            {"role": "assistant", "content": "Line one\n\nLine two 😀 "},
        ],
        False,
    ),
    ([{"role": "user", "content": "Write a haiku."}], True),
    (
        [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Bye"},
        ],
        True,
    ),
]


def hf_chat_ids(hf, messages, **kwargs) -> list[int]:
    """Ids of transformers' apply_chat_template for the same conversation."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    out = hf.apply_chat_template(msgs, tokenize=True, **kwargs)
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)
