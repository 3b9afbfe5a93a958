"""ChatML, the chat format of Qwen2.5 and SmolLM2 (``<|im_start|>role\\ncontent<|im_end|>\\n``)."""
from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.tokenizers._base import Piece


class ChatMLFormat:
    """Render messages as the family's HF ChatML template does.

    ``default_system``: the system turn the template inserts when the conversation has none
    (Qwen2.5: "You are Qwen, ...", SmolLM2: "You are a helpful AI assistant named SmolLM, ...").
    ``qwen_tools``: render ``tool`` turns as Qwen2.5 does (user turns wrapping <tool_response>).
    Content is not stripped (the templates do not strip it).
    """

    def __init__(self, default_system: Optional[str], qwen_tools: bool = False) -> None:
        self.default_system = default_system
        self.qwen_tools = qwen_tools

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        pieces: list[Piece] = []
        if self.default_system is not None and messages[0].role != "system":
            pieces.append((f"<|im_start|>system\n{self.default_system}<|im_end|>\n", True))
        n = len(messages)
        for i, m in enumerate(messages):
            if m.role == "tool" and self.qwen_tools:
                first = i == 0 or messages[i - 1].role != "tool"
                last = i == n - 1 or messages[i + 1].role != "tool"
                text = ("<|im_start|>user" if first else "") + f"\n<tool_response>\n{m.text_content}\n</tool_response>"
                if last and m.eot:
                    text += "<|im_end|>\n"
                pieces.append((text, m.masked))
                continue
            text = f"<|im_start|>{m.role}\n{m.text_content}"
            if m.eot:
                text += "<|im_end|>\n"
            pieces.append((text, m.masked))
        if add_generation_prompt:
            pieces.append(("<|im_start|>assistant\n", True))
        return pieces
