"""Messages and the transforms that turn dataset rows into them.

A conversation is a list of `Message`s. Every dataset row, whatever its layout (alpaca
instruction/input/output, ShareGPT ``conversations``, OpenAI ``messages``, plain text), goes
through one of the transforms below, and the tokenizer's ``tokenize_messages`` turns the messages
into token ids and a loss mask. ``Message.masked`` says whether the message's tokens are left out
of the loss (True = masked, not trained on).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional, Sequence

from tuner.errors import DataError

Role = Literal["system", "user", "assistant", "ipython", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "ipython", "tool")

# The loss ignores labels with this value (torch.nn.CrossEntropyLoss's default ignore_index).
CROSS_ENTROPY_IGNORE_IDX = -100


@dataclass
class Message:
    """One turn of a conversation.

    ``masked``: True leaves the message's tokens out of the loss. ``eot``: whether the turn ends
    with the end-of-turn marker (False continues the turn, as an unfinished assistant message).
    """

    role: str
    content: str
    masked: bool = False
    eot: bool = True
    ipython: bool = False

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise DataError(
                f"unknown message role {self.role!r}",
                f"use one of {', '.join(ROLES)} (map other names with a conversation transform)",
            )
        if not isinstance(self.content, str):
            raise DataError(
                f"message content must be a string, got {type(self.content).__name__}",
                "check the dataset's content column",
            )

    @property
    def text_content(self) -> str:
        """The text of the message (torchtune's name for it)."""
        return self.content

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Message":
        """Build from ``{"role", "content", "masked"?, "eot"?}``."""
        return cls(
            role=d["role"],
            content=d["content"],
            masked=bool(d.get("masked", False)),
            eot=bool(d.get("eot", True)),
            ipython=bool(d.get("ipython", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"role", "content"}``, the form chat templates take."""
        return {"role": self.role, "content": self.content}


def validate_messages(messages: Sequence[Message]) -> None:
    """Check the turn order: at most one system message, first; no two user turns in a row.

    Raises DataError naming the offending position.
    """
    if not messages:
        raise DataError("conversation has no messages", "drop empty rows with filter_fn")
    last_role = None
    for i, m in enumerate(messages):
        if m.role == "system" and i > 0:
            raise DataError(f"system message at position {i}; it must come first", "move it to the start")
        if m.role == "user" and last_role == "user":
            raise DataError(f"two user messages in a row at positions {i - 1} and {i}", "merge them into one")
        last_role = m.role


def _mapped(column_map: Optional[Mapping[str, str]], defaults: Sequence[str]) -> dict[str, str]:
    """Expected column name -> actual column name, defaults where column_map says nothing."""
    cm = dict(column_map or {})
    unknown = set(cm) - set(defaults)
    if unknown:
        raise DataError(
            f"column_map has unknown key(s) {sorted(unknown)}",
            f"column_map maps the expected columns {list(defaults)} to your dataset's column names",
        )
    return {k: cm.get(k, k) for k in defaults}


def _get_field(row: Mapping[str, Any], column: str, expected: str, *, allow_empty: bool = False) -> str:
    """Read a string column of a row, with an error that names the column and the fix."""
    if column not in row:
        hint = f"column_map={{'{expected}': '<your column>'}}" if column == expected else f"fix column_map['{expected}']"
        raise DataError(
            f"row has no column {column!r} (columns: {sorted(row.keys())})",
            f"rename the column in the data or pass {hint}",
        )
    value = row[column]
    if value is None and allow_empty:
        return ""
    if not isinstance(value, str):
        raise DataError(
            f"column {column!r} must be a string, got {type(value).__name__}",
            "clean the data or drop such rows with filter_fn",
        )
    if not allow_empty and not value.strip():
        raise DataError(f"column {column!r} is empty", "drop such rows with filter_fn")
    return value


class InputOutputToMessages:
    """A row with an input column and an output column -> [user, assistant].

    ``column_map`` maps "input"/"output" (and "system" if ``new_system_prompt`` is unset and the
    data has one) to the dataset's names. ``train_on_input=False`` masks the user turn.
    """

    def __init__(
        self,
        train_on_input: bool = False,
        column_map: Optional[Mapping[str, str]] = None,
        new_system_prompt: Optional[str] = None,
    ) -> None:
        self.train_on_input = train_on_input
        self.column_map = _mapped(column_map, ("input", "output"))
        self.new_system_prompt = new_system_prompt

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        messages = []
        if self.new_system_prompt is not None:
            messages.append(Message("system", self.new_system_prompt, masked=True))
        messages.append(
            Message("user", _get_field(row, self.column_map["input"], "input"), masked=not self.train_on_input)
        )
        messages.append(Message("assistant", _get_field(row, self.column_map["output"], "output")))
        return {"messages": messages}


# The Stanford Alpaca prompt (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT).
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


class AlpacaToMessages:
    """An alpaca row (instruction, input, output) -> [user (the Alpaca prompt), assistant].

    The user turn is the standard Alpaca prompt, with or without the "### Input:" block depending on
    whether ``input`` is empty. ``train_on_input=False`` masks it.
    """

    def __init__(self, train_on_input: bool = True, column_map: Optional[Mapping[str, str]] = None) -> None:
        self.train_on_input = train_on_input
        self.column_map = _mapped(column_map, ("instruction", "input", "output"))

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        cm = self.column_map
        instruction = _get_field(row, cm["instruction"], "instruction")
        inp = _get_field(row, cm["input"], "input", allow_empty=True) if cm["input"] in row or cm["input"] != "input" else ""
        output = _get_field(row, cm["output"], "output")
        if inp.strip():
            prompt = ALPACA_PROMPT_INPUT.format(instruction=instruction, input=inp)
        else:
            prompt = ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
        return {
            "messages": [
                Message("user", prompt, masked=not self.train_on_input),
                Message("assistant", output),
            ]
        }


class _ConversationToMessages:
    """The loop both conversation styles share: a column holding a list of turn objects -> messages.

    A style names its column (``_column``), the keys of a turn's speaker and text
    (``_speaker_key``, ``_text_key``), the other style to suggest for objects of another shape
    (``_other_style``) and how a speaker maps to a role (``_role``); the system-prompt and
    masking rules are the same for both.
    """

    _column: str
    _speaker_key: str
    _text_key: str
    _other_style: str

    def __init__(
        self,
        train_on_input: bool = False,
        column_map: Optional[Mapping[str, str]] = None,
        new_system_prompt: Optional[str] = None,
    ) -> None:
        self.train_on_input = train_on_input
        self.column_map = _mapped(column_map, (self._column,))
        self.new_system_prompt = new_system_prompt

    def _role(self, speaker: Any, col: str, j: int) -> str:
        raise NotImplementedError

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        col = self.column_map[self._column]
        turns = _get_list(row, col, self._column)
        messages = []
        if self.new_system_prompt is not None:
            messages.append(Message("system", self.new_system_prompt, masked=True))
        for j, turn in enumerate(turns):
            if not isinstance(turn, Mapping) or self._speaker_key not in turn or self._text_key not in turn:
                raise DataError(
                    f"turn {j} of column {col!r} is not a {{'{self._speaker_key}', '{self._text_key}'}} object",
                    self._other_style,
                )
            role = self._role(turn[self._speaker_key], col, j)
            if role == "system" and self.new_system_prompt is not None:
                continue
            masked = role != "assistant" and not self.train_on_input
            messages.append(Message(role, _turn_content(turn[self._text_key], col, j), masked=masked))
        return {"messages": messages}


_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


class ShareGPTToMessages(_ConversationToMessages):
    """A ShareGPT row, ``conversations: [{"from": "human"|"gpt"|"system", "value": ...}]`` -> messages.

    ``column_map`` maps "conversations". ``new_system_prompt`` replaces any system turn.
    ``train_on_input=False`` masks system and user turns.
    """

    _column = "conversations"
    _speaker_key = "from"
    _text_key = "value"
    _other_style = "use conversation_style='openai' for {'role', 'content'} lists"

    def _role(self, speaker: Any, col: str, j: int) -> str:
        role = _SHAREGPT_ROLES.get(speaker)
        if role is None:
            raise DataError(
                f"turn {j} of column {col!r} has unknown speaker {speaker!r}",
                f"use one of {sorted(_SHAREGPT_ROLES)}",
            )
        return role


class OpenAIToMessages(_ConversationToMessages):
    """An OpenAI-style row, ``messages: [{"role", "content"}]`` -> messages.

    ``column_map`` maps "messages". ``new_system_prompt`` replaces any system turn.
    ``train_on_input=False`` masks system and user turns.
    """

    _column = "messages"
    _speaker_key = "role"
    _text_key = "content"
    _other_style = "use conversation_style='sharegpt' for {'from', 'value'} lists"

    def _role(self, speaker: Any, col: str, j: int) -> str:
        if speaker not in ROLES:
            raise DataError(f"turn {j} of column {col!r} has unknown role {speaker!r}", f"use one of {', '.join(ROLES)}")
        return speaker


def _get_list(row: Mapping[str, Any], column: str, expected: str) -> list:
    if column not in row:
        raise DataError(
            f"row has no column {column!r} (columns: {sorted(row.keys())})",
            f"rename the column in the data or pass column_map={{'{expected}': '<your column>'}}",
        )
    value = row[column]
    if not isinstance(value, list) or not value:
        raise DataError(f"column {column!r} must be a non-empty list of turns", "drop such rows with filter_fn")
    return value


def _turn_content(content: Any, column: str, j: int) -> str:
    """Content of a turn: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise DataError(f"turn {j} of column {column!r} has a non-text content part", "only text is supported")
        content = "".join(parts)
    if not isinstance(content, str):
        raise DataError(
            f"turn {j} of column {column!r}: content must be a string, got {type(content).__name__}",
            "clean the data or drop such rows with filter_fn",
        )
    return content


class TextToMessages:
    """A plain-text row -> one unmasked assistant message (for text completion)."""

    def __init__(self, column: str = "text") -> None:
        self.column = column

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        text = _get_field(row, self.column, "text")
        return {"messages": [Message("assistant", text)]}


def to_messages(messages: Sequence[Any]) -> list[Message]:
    """Accept `Message`s or ``{"role", "content"}`` dicts; return `Message`s."""
    out = []
    for m in messages:
        out.append(m if isinstance(m, Message) else Message.from_dict(m))
    return out
