"""Qwen3 tokenizer: Qwen2.5's byte-level BPE plus thinking tokens, and Qwen3's chat template."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._base import FamilyTokenizer, Piece
from tuner.data.tokenizers._chatml import chatml_tokenizer, tool_response
from tuner.data.tokenizers.qwen2_5 import QWEN2_5_ADDED_TOKENS, qwen_backend

# Added tokens after Qwen2.5's, in id order (151665-151668): (content, special).
QWEN3_ADDED_TOKENS = [
    *QWEN2_5_ADDED_TOKENS,
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]


class Qwen3Format:
    """Render messages as Qwen3's HF chat template does.

    No default system prompt. An assistant turn's reasoning is the text before ``</think>`` in its
    content (after ``<think>``); the template keeps it only for answers after the last user query
    (earlier answers keep only their text after ``</think>``), and gives the last message an empty
    ``<think>\\n\\n</think>\\n\\n`` block when it has none. ``enable_thinking=False`` closes an empty
    thinking block after the generation prompt, so the model answers without thinking.
    """

    def __init__(self, enable_thinking: bool = True) -> None:
        self.enable_thinking = enable_thinking

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        texts = [m.text_content for m in messages]
        last_query = next(
            (
                i
                for i in range(len(messages) - 1, -1, -1)
                if messages[i].role == "user"
                and not (texts[i].startswith("<tool_response>") and texts[i].endswith("</tool_response>"))
            ),
            len(messages) - 1,
        )
        pieces: list[Piece] = []
        for i, m in enumerate(messages):
            if m.role == "tool":
                pieces.append((tool_response(messages, i), m.masked))
                continue
            text = f"<|im_start|>{m.role}\n"
            if m.role == "assistant":
                text += self._answer(texts[i], after_last_query=i > last_query, last=i == len(messages) - 1)
            else:
                text += texts[i]
            pieces.append((text + ("<|im_end|>\n" if m.eot else ""), m.masked))
        if add_generation_prompt:
            no_thinking = "" if self.enable_thinking else "<think>\n\n</think>\n\n"
            pieces.append(("<|im_start|>assistant\n" + no_thinking, True))
        return pieces

    @staticmethod
    def _answer(content: str, *, after_last_query: bool, last: bool) -> str:
        reasoning = ""
        if "</think>" in content:
            before, content = content.split("</think>")[0], content.split("</think>")[-1].lstrip("\n")
            reasoning = before.rstrip("\n").split("<think>")[-1].lstrip("\n")
        if after_last_query and (last or reasoning):
            return "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
        return content


def qwen3_tokenizer(
    path: str,
    merges_file: Optional[str] = None,
    max_seq_len: Optional[int] = None,
    prompt_template: PromptTemplateLike = None,
    enable_thinking: bool = True,
) -> FamilyTokenizer:
    """Qwen3 tokenizer.

    ``path``: tokenizer.json, a folder holding it, or vocab.json when ``merges_file`` is given
    (torchtune's Qwen3 configs). Chat format: `Qwen3Format` (``enable_thinking`` as in HF's
    ``apply_chat_template``). EOS is ``<|im_end|>``, padding ``<|endoftext|>``; no BOS.
    """
    backend = qwen_backend(os.fspath(path), merges_file, QWEN3_ADDED_TOKENS)
    return chatml_tokenizer(
        backend,
        Qwen3Format(enable_thinking),
        pad_token="<|endoftext|>",
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name="qwen3",
        title="Qwen3",
    )
