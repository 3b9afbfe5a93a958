"""Gemma 2 tokenizer: tokenizer.json (or its SentencePiece tokenizer.model) with turn markers."""

from __future__ import annotations

from typing import Optional, Sequence

from tuner.data.messages import Message
from tuner.data.prompt_templates import PromptTemplateLike
from tuner.data.tokenizers._backends import iter_required, load_backend
from tuner.data.tokenizers._base import FamilyTokenizer, Piece, split_system


class Gemma2Format:
    """Gemma-2-it's HF template: ``<bos><start_of_turn>user\\ncontent<end_of_turn>\\n<start_of_turn>model\\n...``.

    Contents are trimmed; the assistant role is called ``model``. Gemma has no system role (the HF
    template raises on one); here a system prompt (untrimmed) and a blank line go in front of the
    first user turn's trimmed content, as Gemma 3's template does.
    """

    def __call__(self, messages: Sequence[Message], *, add_generation_prompt: bool = False) -> list[Piece]:
        system, msgs = split_system(messages)
        pieces: list[Piece] = [("<bos>", True)]
        for i, m in enumerate(msgs):
            prefix = f"{system}\n\n" if system is not None and i == 0 else ""  # not trimmed, as Gemma 3's template
            role = "model" if m.role == "assistant" else m.role
            text = f"<start_of_turn>{role}\n{prefix}{m.text_content.strip()}"
            pieces.append((text + ("<end_of_turn>\n" if m.eot else ""), m.masked))
        if add_generation_prompt:
            pieces.append(("<start_of_turn>model\n", True))
        return pieces


def gemma2_tokenizer(
    path: str, max_seq_len: Optional[int] = None, prompt_template: PromptTemplateLike = None
) -> FamilyTokenizer:
    """Gemma 2 tokenizer from tokenizer.json, its folder, or tokenizer.model.

    BOS ``<bos>``, EOS ``<eos>``, pad ``<pad>``; generation also stops at ``<end_of_turn>``.
    """
    backend = load_backend(path)
    ids = iter_required(backend, ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"], "Gemma 2")
    return FamilyTokenizer(
        backend,
        Gemma2Format(),
        bos_id=ids["<bos>"],
        eos_id=ids["<eos>"],
        pad_id=ids["<pad>"],
        stop_tokens=[ids["<eos>"], ids["<end_of_turn>"]],
        max_seq_len=max_seq_len,
        prompt_template=prompt_template,
        name="gemma2",
    )
