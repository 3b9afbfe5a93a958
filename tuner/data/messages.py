"""Messages and the transforms that turn dataset rows into them.

A conversation is a list of `Message`s. Every dataset row, whatever its layout (alpaca
instruction/input/output, ShareGPT ``conversations``, OpenAI ``messages``, chosen/rejected pairs,
plain text), goes through one of the transforms below, and the tokenizer's ``tokenize_messages``
turns the messages into token ids and a loss mask. ``Message.masked`` says whether the message's
tokens are left out of the loss (True = masked, not trained on).

The classes keep torchtune's names, arguments and content layout, so transforms and tokenizers
written for torchtune work on them: ``Message.content`` is a list of parts
``[{"type": "text", "content": "..."}]`` (a string is accepted and becomes one text part) and
``text_content`` is the text. tuner trains text-only models: an image part is refused with an error.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Sequence, Union

from tuner.data.transforms import Transform
from tuner.errors import DataError

Role = Literal["system", "user", "assistant", "ipython", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "ipython", "tool")

# The loss ignores labels with this value (torch.nn.CrossEntropyLoss's default ignore_index).
CROSS_ENTROPY_IGNORE_IDX = -100

Content = Union[str, Sequence[Mapping[str, Any]]]


class Message:
    """One turn of a conversation.

    Args:
        role: "system", "user", "assistant", "ipython" or "tool" (a tool's answer).
        content: the text, or torchtune's list of parts ``[{"type": "text", "content": str}]``.
        masked: True leaves the message's tokens out of the loss.
        ipython: the message is a tool call (assistant messages only).
        eot: whether the turn ends with the end-of-turn marker (False continues the turn, as an
            unfinished assistant message or a tool call followed by its result).
    """

    def __init__(
        self, role: Role, content: Content, masked: bool = False, ipython: bool = False, eot: bool = True
    ) -> None:
        if role not in ROLES:
            raise DataError(
                f"unknown message role {role!r}",
                f"use one of {', '.join(ROLES)} (map other names with a conversation transform)",
            )
        self.role = role
        self.content = _text_parts(content, ipython)
        self.masked = bool(masked)
        self.ipython = bool(ipython)
        self.eot = bool(eot)
        if self.ipython and role != "assistant":
            raise DataError(
                f"Only assistant messages can be tool calls. Found role {role} in message: {self.text_content}",
                "set ipython only on assistant messages",
            )

    @property
    def text_content(self) -> str:
        """The message's text (its text parts joined)."""
        return "".join(part["content"] for part in self.content)

    @property
    def contains_media(self) -> bool:
        """Always False: tuner messages hold text only (torchtune's API)."""
        return False

    def get_media(self) -> list:
        """No media: tuner messages hold text only (torchtune's API)."""
        return []

    def replace(self, **changes: Any) -> "Message":
        """A copy with the given fields (role, content, masked, ipython, eot) changed."""
        fields = dict(role=self.role, content=self.content, masked=self.masked, ipython=self.ipython, eot=self.eot)
        fields.update(changes)
        return Message(**fields)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Message":
        """Build from ``{"role", "content", "masked"?, "ipython"?, "eot"?}``."""
        return cls(
            role=d["role"],
            content=d["content"],
            masked=bool(d.get("masked", False)),
            ipython=bool(d.get("ipython", False)),
            eot=bool(d.get("eot", True)),
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"role", "content"}`` with the text as content: the form chat templates take."""
        return {"role": self.role, "content": self.text_content}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.role, self.content, self.masked, self.ipython, self.eot) == (
            other.role,
            other.content,
            other.masked,
            other.ipython,
            other.eot,
        )

    __hash__ = None  # mutable, like torchtune's

    def __repr__(self) -> str:
        return f"Message(role='{self.role}', content={[part['content'] for part in self.content]!r})"


def _text_parts(content: Content, ipython: bool) -> list[dict[str, str]]:
    """A string or a list of parts -> a list of text parts; media parts are refused."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if not isinstance(content, (list, tuple)):
        raise DataError(
            f"message content must be a string or a list of parts, got {type(content).__name__}",
            "check the dataset's content column",
        )
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("content"), str):
            parts.append({"type": "text", "content": part["content"]})
        elif kind in ("image", "image_url", "video", "audio"):
            if ipython:
                text = "".join(p["content"] for p in content if isinstance(p, Mapping) and p.get("type") == "text")
                raise DataError(
                    f"Media tokens in tool calls are not supported. Both are set in message: {text}",
                    "a tool call holds text only",
                )
            raise DataError(
                f"message content has a {kind!r} part; tuner fine-tunes text-only models",
                "drop the image columns (or rows) from the dataset",
            )
        else:
            raise DataError(
                f"message content part {part!r} is not a text part",
                'write parts as {"type": "text", "content": "..."}',
            )
    return parts


def validate_messages(
    messages: Sequence[Message], *, min_messages: int = 2, assistant_needs_prompt: bool = True
) -> None:
    """Check that messages form a conversation (torchtune's rules).

    At least ``min_messages`` messages; a system message only first; no two user messages in a
    row; with ``assistant_needs_prompt``, an assistant message only after a user (or tool) message.
    Tokenizers pass ``min_messages=1, assistant_needs_prompt=False`` (a lone text or a prompt is
    fine there). Raises `DataError` (a ValueError) naming the position.
    """
    if len(messages) < min_messages:
        raise DataError(
            f"Messages must be at least length {min_messages}, but got {len(messages)} messages",
            "drop such rows with filter_fn",
        )
    last_turn = None
    for i, message in enumerate(messages):
        if (
            assistant_needs_prompt
            and message.role == "assistant"
            and last_turn not in ("user", "tool", "ipython", "assistant")
        ):
            raise DataError(f"Assistant message before expected user message at index {i} in messages")
        if message.role == "user" and last_turn == "user":
            raise DataError(
                f"Two consecutive user messages at index {i} and {i - 1} in messages", "merge them into one"
            )
        if message.role == "system" and i > 0:
            raise DataError(
                f"System message at index {i} in messages, but system messages must come first", "move it to the start"
            )
        last_turn = message.role


def _mapped(
    column_map: Optional[Mapping[str, str]], expected: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, str]:
    """Expected column name -> the dataset's column name (a key column_map leaves out keeps its name).

    A key that is not one of ``expected`` (or ``optional``) is refused, naming the expected key it
    most likely stands for (the first one column_map does not give).
    """
    cm = dict(column_map or {})
    unknown = sorted(set(cm) - set(expected) - set(optional))
    if unknown:
        missing = [k for k in expected if k not in cm] or list(expected)
        raise DataError(
            f"Expected a key of {missing[0]!r} in column_map but found {sorted(cm)} (unknown key(s) {unknown})",
            f"column_map maps the columns {list(expected)} to your dataset's column names",
        )
    return {k: cm.get(k, k) for k in (*expected, *optional)}


def _get_field(row: Mapping[str, Any], column: str, expected: str, *, allow_empty: bool = False) -> str:
    """Read a string column of a row, with an error that names the column and the fix."""
    if column not in row:
        hint = (
            f"column_map={{'{expected}': '<your column>'}}" if column == expected else f"fix column_map['{expected}']"
        )
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


def _system(prompt: Optional[str]) -> list[Message]:
    return [] if prompt is None else [Message("system", prompt, masked=True, eot=True)]


def _refuse_image_dir(image_dir: Any) -> None:
    """torchtune's message transforms take ``image_dir``; tuner's models read text only."""
    if image_dir is not None:
        raise DataError("image_dir is for image datasets; tuner fine-tunes text-only models", "remove image_dir")


class _RowToMessages(Transform):
    """The settings torchtune's row -> messages transforms share, in its argument order: whether
    the prompt is trained on, the column map (of the class's ``_columns``, ``_optional_columns``
    allowed too), a system prompt to add. Images are refused (``image_dir``); the other image
    options torchtune's conversation transforms take (e.g. ShareGPT's ``image_tag``) are accepted
    and unused where ``_takes_image_options`` says so, refused elsewhere.
    """

    _columns: tuple[str, ...]
    _optional_columns: tuple[str, ...] = ()
    _takes_image_options = False

    def __init__(
        self,
        train_on_input: bool = False,
        column_map: Optional[Mapping[str, str]] = None,
        new_system_prompt: Optional[str] = None,
        image_dir: Any = None,
        **image_options: Any,
    ) -> None:
        _refuse_image_dir(image_dir)
        if image_options and not self._takes_image_options:
            raise DataError(
                f"{type(self).__name__} got unknown argument(s) {sorted(image_options)}",
                "use train_on_input, column_map, new_system_prompt",
            )
        self.train_on_input = train_on_input
        self.column_map = _mapped(column_map, self._columns, optional=self._optional_columns)
        self.new_system_prompt = new_system_prompt


class InputOutputToMessages(_RowToMessages):
    """A row with an input column and an output column -> [user, assistant].

    ``column_map`` maps "input"/"output" to the dataset's names. ``train_on_input=False`` masks the
    user turn; ``new_system_prompt`` adds a system turn first.
    """

    _columns = ("input", "output")

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        messages = _system(self.new_system_prompt)
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


class AlpacaToMessages(Transform):
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
        inp = (
            _get_field(row, cm["input"], "input", allow_empty=True)
            if cm["input"] in row or cm["input"] != "input"
            else ""
        )
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


class _ConversationToMessages(_RowToMessages):
    """The loop the conversation styles share: a column holding a list of turn objects -> messages.

    A style names its column (``_column``), the keys of a turn's speaker and text
    (``_speaker_key``, ``_text_key``), the other style to suggest for objects of another shape
    (``_other_style``) and how a speaker maps to a role (``_role``); the system-prompt and
    masking rules are the same for all.
    """

    _column: str
    _speaker_key: str
    _text_key: str
    _other_style: str
    _optional_columns = ("image",)
    _takes_image_options = True

    @property
    def _columns(self) -> tuple[str, ...]:
        return (self._column,)

    def _role(self, speaker: Any, col: str, j: int) -> str:
        raise NotImplementedError

    def to_messages(self, turns: Any, col: str) -> list[Message]:
        """The messages of one conversation (a list of turn objects read from column ``col``)."""
        if not isinstance(turns, list) or not turns:
            raise DataError(f"column {col!r} must be a non-empty list of turns", "drop such rows with filter_fn")
        messages = _system(self.new_system_prompt)
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
        return messages

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        col = self.column_map[self._column]
        if col not in row:
            raise DataError(
                f"row has no column {col!r} (columns: {sorted(row.keys())})",
                f"rename the column in the data or pass column_map={{'{self._column}': '<your column>'}}",
            )
        return {"messages": self.to_messages(row[col], col)}


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
    ``train_on_input=False`` masks system and user turns. Content may be OpenAI's list of
    ``{"type": "text", "text": ...}`` parts.
    """

    _column = "messages"
    _speaker_key = "role"
    _text_key = "content"
    _other_style = "use conversation_style='sharegpt' for {'from', 'value'} lists"

    def _role(self, speaker: Any, col: str, j: int) -> str:
        if speaker not in ROLES:
            raise DataError(
                f"turn {j} of column {col!r} has unknown role {speaker!r}", f"use one of {', '.join(ROLES)}"
            )
        return speaker


class ChosenRejectedToMessages(Transform):
    """A preference row -> ``{"chosen": [...], "rejected": [...]}`` messages (as torchtune's, for
    preference data). ``chosen`` and ``rejected`` are either conversations of ``{"role", "content"}``
    turns (torchtune's layout, the prompt inside each) or the two responses as text, asked by the
    text of the ``prompt`` column (TRL's and Stack Exchange's layout).

    ``column_map`` maps "chosen"/"rejected" (and "prompt"). ``new_system_prompt`` replaces any system
    turn; ``train_on_input=False`` masks every non-assistant turn.
    """

    def __init__(
        self,
        train_on_input: bool = False,
        column_map: Optional[Mapping[str, str]] = None,
        new_system_prompt: Optional[str] = None,
    ) -> None:
        self.column_map = _mapped(column_map, ("chosen", "rejected"), optional=("prompt",))
        self.train_on_input = train_on_input
        self.new_system_prompt = new_system_prompt
        self._conversation = OpenAIToMessages(train_on_input=train_on_input, new_system_prompt=new_system_prompt)

    def __call__(self, row: Mapping[str, Any]) -> dict[str, list[Message]]:
        out = {}
        for key in ("chosen", "rejected"):
            col = self.column_map[key]
            if col not in row:
                raise DataError(
                    f"row has no column {col!r} (columns: {sorted(row.keys())})",
                    f"rename the column in the data or pass column_map={{'{key}': '<your column>'}}",
                )
            if not isinstance(row[col], (str, list)):
                raise DataError(
                    f"column {col!r} must be a response text or a list of turns, got {type(row[col]).__name__}",
                    "clean the data or drop such rows with filter_fn",
                )
            if isinstance(row[col], str):
                prompt = _get_field(row, self.column_map["prompt"], "prompt")
                out[key] = [
                    *_system(self.new_system_prompt),
                    Message("user", prompt, masked=not self.train_on_input),
                    Message("assistant", _get_field(row, col, key)),
                ]
            else:
                out[key] = self._conversation.to_messages(row[col], col)
        return out


class StackExchangePairedToMessages(ChosenRejectedToMessages):
    """torchtune's transform for rows of a prompt and two text answers (columns ``prompt``, ``chosen``,
    ``rejected`` unless ``column_map`` says otherwise); no system prompt."""

    def __init__(self, train_on_input: bool = False, column_map: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(train_on_input, column_map)


def _turn_content(content: Any, column: str, j: int) -> str:
    """Content of a turn: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise DataError(
                    f"turn {j} of column {column!r} has a non-text content part",
                    "tuner fine-tunes text-only models: drop rows with images",
                )
        content = "".join(parts)
    if not isinstance(content, str):
        raise DataError(
            f"turn {j} of column {column!r}: content must be a string, got {type(content).__name__}",
            "clean the data or drop such rows with filter_fn",
        )
    return content


class TextToMessages(Transform):
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
