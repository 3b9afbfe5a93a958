"""ChatML, the chat format of Qwen2.5, Qwen3 and SmolLM2 (``<|im_start|>role\\ncontent<|im_end|>\\n``),
and the family tokenizer those three build around it."""

from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import iter_required
from tuner.data.tokenizers._base import ChatFormat, FamilyTokenizer, Piece


def chatml_tokenizer(
    backend,
    chat_format: ChatFormat,
    *,
    pad_token: str,
    max_seq_len: Optional[int],
    prompt_template: PromptTemplateLike,
    name: str,
    title: str,
) -> FamilyTokenizer:
    """A ChatML family's tokenizer: no BOS, EOS ``<|im_end|>``, padding ``pad_token``, generation
    stops at ``<|im_end|>`` or ``<|endoftext|>``. ``title`` names the family in errors."""
    ids = iter_required(backend, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], title)
    return FamilyTokenizer(
        backend,
        chat_format,
        bos_id=None,
        eos_id=ids["<|im_end|>"],
        pad_id=ids[pad_token],
        stop_tokens=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name=name,
    )


def tool_response(messages: Sequence[Message], i: int) -> str:
    """Message ``i`` (a ``tool`` turn) as Qwen's templates render it: consecutive tool turns share one
    user turn, each wrapped in ``<tool_response>``."""
    m, n = messages[i], len(messages)
    first = i == 0 or messages[i - 1].role != "tool"
    last = i == n - 1 or messages[i + 1].role != "tool"
    text = ("<|im_start|>user" if first else "") + f"\n<tool_response>\n{m.text_content}\n</tool_response>"
    return text + "<|im_end|>\n" if last and m.eot else text


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
        for i, m in enumerate(messages):
            if m.role == "tool" and self.qwen_tools:
                pieces.append((tool_response(messages, i), m.masked))
                continue
            text = f"<|im_start|>{m.role}\n{m.text_content}"
            pieces.append((text + ("<|im_end|>\n" if m.eot else ""), m.masked))
        if add_generation_prompt:
            pieces.append(("<|im_start|>assistant\n", True))
        return pieces
