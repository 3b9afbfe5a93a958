"""torchtune's data API on tuner: messages with text parts, prompt_template=None, tokenize_messages
keywords, chat templates as text, collate helpers, SFT rows from a list, ConcatDataset."""

from __future__ import annotations

import pytest
import torch

from tuner.data import (
    ChatMLTemplate,
    ChosenRejectedToMessages,
    Message,
    PackedDataset,
    left_pad_sequence,
    padded_collate,
    padded_collate_dpo,
    truncate,
    validate_messages,
)
from tuner.data.tokenizers import (
    Llama2ChatTemplate,
    gemma_tokenizer,
    llama2_tokenizer,
    mistral_tokenizer,
    tokenize_messages_no_special_tokens,
)
from tuner.datasets import ConcatDataset, SFTDataset
from tuner.errors import ConfigError, DataError

CONVERSATION = [
    Message("system", "Be brief.", masked=True),
    Message("user", "What is the capital of France?", masked=True),
    Message("assistant", "Paris."),
]


def test_message_content_is_a_list_of_text_parts():
    m = Message("user", "hello world")
    assert m.content == [{"type": "text", "content": "hello world"}] and m.text_content == "hello world"
    parts = Message("user", [{"type": "text", "content": "hello"}, {"type": "text", "content": " world"}])
    assert parts.text_content == "hello world" and not parts.contains_media and parts.get_media() == []
    assert repr(parts) == "Message(role='user', content=['hello', ' world'])"
    assert Message.from_dict({"role": "assistant", "content": "x", "eot": False}) == Message(
        "assistant", "x", eot=False
    )
    for part in (torch.zeros(1), {"type": "text", "content": 3}):
        with pytest.raises(DataError, match="not a text part"):
            Message("user", [part])
    with pytest.raises(DataError, match="'image' part; tuner fine-tunes text-only models") as e:
        Message("user", [{"type": "image", "content": object()}])
    assert isinstance(e.value, ValueError) and "drop the image" in str(e.value)
    with pytest.raises(DataError, match="Only assistant messages can be tool calls. Found role user"):
        Message("user", "x", ipython=True)


def test_validate_messages_rules():
    validate_messages(CONVERSATION)
    with pytest.raises(DataError, match="at least length 2"):
        validate_messages(CONVERSATION[2:])
    with pytest.raises(DataError, match="Assistant message before expected user message at index 0"):
        validate_messages([Message("assistant", "a"), Message("user", "b")])
    with pytest.raises(DataError, match="System message at index 1"):
        validate_messages([CONVERSATION[1], CONVERSATION[0]])
    # What the tokenizers accept: a lone prompt or text.
    validate_messages(CONVERSATION[2:], min_messages=1, assistant_needs_prompt=False)


def test_prompt_template_none_tokenizes_raw_turns_between_bos_and_eos(sp_model):
    for build in (llama2_tokenizer, mistral_tokenizer, gemma_tokenizer):
        tok = build(sp_model, prompt_template=None)
        user, answer = CONVERSATION[1:]
        tokens, mask = tok.tokenize_messages([user, answer])
        # The answer continues the user's turn: encoded without SentencePiece's leading space.
        u = tok.encode(user.text_content, False, False)
        a = tok.encode(answer.text_content, False, False, trim_leading_whitespace=True)
        assert tokens == [tok.bos_id] + u + a + [tok.eos_id]
        assert mask == [True] * (1 + len(u)) + [False] * (len(a) + 1)
        assert tok.tokenize_messages([user, answer], add_end_tokens=False)[0] == tokens[:-1]
        assert tok.tokenize_messages([user, answer], add_eos=False)[0] == tokens[:-1]
        assert tok.tokenize_messages([user, answer], add_start_tokens=False)[0] == tokens[1:]
    # The family's own template (the default) is its chat format; another template is text.
    chat = llama2_tokenizer(sp_model)
    assert chat.decode(chat.tokenize_messages(CONVERSATION)[0]) == chat.decode(
        chat.encode(
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is the capital of France? [/INST] Paris. ", add_eos=False
        )
    )
    qa = llama2_tokenizer(sp_model, prompt_template="tuner.data.QuestionAnswerTemplate")
    assert qa.decode(qa.tokenize_messages(CONVERSATION[1:])[0]).startswith("Question: What is")


def test_chat_keywords_with_a_chat_format(sp_model):
    tok = llama2_tokenizer(sp_model)
    tokens, mask = tok.tokenize_messages(CONVERSATION)
    assert tokens[0] == tok.bos_id and tokens[-1] == tok.eos_id
    assert tok.tokenize_messages(CONVERSATION, add_start_tokens=False) == (tokens[1:], mask[1:])
    assert tok.tokenize_messages(CONVERSATION, add_eos=False)[0][-1] != tok.eos_id
    cut = llama2_tokenizer(sp_model, max_seq_len=8).tokenize_messages(CONVERSATION)
    assert cut[0] == tokens[:7] + [tok.eos_id] and cut[1][-1] is True  # cut as torchtune cuts: EOS last, masked


def test_templates_as_text():
    llama2 = Llama2ChatTemplate()(CONVERSATION)
    assert [m.text_content for m in llama2] == [
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nWhat is the capital of France? [/INST] ",
        "Paris.",
    ]
    assert llama2[0].masked and not llama2[1].masked
    chatml = ChatMLTemplate()(CONVERSATION[1:2] + [Message("assistant", "")])
    assert [m.text_content for m in chatml] == [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
        "<|im_start|>assistant\n",
    ]


def test_tokenize_messages_no_special_tokens_truncates_keeping_eos():
    class Words:
        max_seq_len = 5

        def encode(self, text, add_bos=False, add_eos=False, trim_leading_whitespace=False):
            return [len(w) for w in text.split()]

    tokens, mask = tokenize_messages_no_special_tokens(
        Words(), [Message("user", "aa bbb", masked=True), Message("assistant", "c dd eee ffff")], bos_id=0, eos_id=-1
    )
    assert tokens == [0, 2, 3, 1, -1] and mask == [True, True, True, False, False]
    assert truncate([1, 2, 3], 2) == [1, 2] and truncate([True, False, True], 2, eos_id=True) == [True, True]


def test_collate_helpers():
    a, b = torch.tensor([1, 2]), torch.tensor([3, 4, 5])
    assert left_pad_sequence([a, b], batch_first=True, padding_value=0).tolist() == [[0, 1, 2], [3, 4, 5]]
    out = padded_collate(
        [{"tokens": [1], "label": 7}, {"tokens": [2, 3], "label": 8}],
        pad_direction="left",
        keys_to_pad=["tokens"],
        padding_idx=9,
    )
    assert out["tokens"].tolist() == [[9, 1], [2, 3]] and out["label"].tolist() == [7, 8]
    with pytest.raises(ConfigError, match="pad_direction"):
        padded_collate([{"tokens": [1]}], pad_direction="up", keys_to_pad=["tokens"], padding_idx=0)
    with pytest.raises(ConfigError, match="padding_idx was given for the keys"):
        padded_collate(
            [{"tokens": [1], "x": [1]}], pad_direction="right", keys_to_pad=["tokens", "x"], padding_idx={"x": 0}
        )
    ids, labels = padded_collate_dpo(
        [{"chosen_input_ids": [1, 2], "chosen_labels": [3, 4], "rejected_input_ids": [5], "rejected_labels": [6]}]
    )
    assert ids.tolist() == [[1, 2], [5, 0]] and labels.tolist() == [[3, 4], [6, -100]]


def test_chosen_rejected_to_messages():
    row = {
        "c": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
        "r": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
    }
    out = ChosenRejectedToMessages(column_map={"chosen": "c", "rejected": "r"}, new_system_prompt="S")(row)
    assert [m.text_content for m in out["rejected"]] == ["S", "q", "bad"]
    assert [m.masked for m in out["chosen"]] == [True, True, False]
    with pytest.raises(DataError, match="Expected a key of 'rejected' in column_map"):
        ChosenRejectedToMessages(column_map={"chosen": "c", "bad": "r"})


def test_sft_dataset_over_a_list_checks_messages_and_the_model_transform(monkeypatch, sp_model):
    import tuner.datasets._sft as sft

    rows = [{"q": "Hi", "a": "Yo"}, {"q": "", "a": "x"}]
    monkeypatch.setattr(sft, "load_dataset", lambda source, **kwargs: rows)
    to_messages = lambda row: {"messages": [Message("user", row["q"], masked=True), Message("assistant", row["a"])]}  # noqa: E731
    tok = llama2_tokenizer(sp_model, prompt_template=None)
    ds = SFTDataset(source="any", message_transform=to_messages, model_transform=tok, filter_fn=lambda r: bool(r["q"]))
    assert len(ds) == 1 and ds[0]["tokens"] == tok.tokenize_messages(to_messages(rows[0])["messages"])[0]
    lone = SFTDataset(
        source="any", message_transform=lambda row: {"messages": [Message("user", row["q"])]}, model_transform=tok
    )
    with pytest.raises(DataError, match="dataset 'any', row 0: Messages must be at least length 2"):
        lone[0]
    no_mask = SFTDataset(source="any", message_transform=to_messages, model_transform=lambda s: {"tokens": [1]})
    with pytest.raises(DataError, match="model_transform returned the following keys: tokens"):
        no_mask[0]


def test_concat_dataset():
    ds = ConcatDataset([[{"i": 0}, {"i": 1}], [{"i": 2}]])
    assert len(ds) == 3 and [ds[i]["i"] for i in range(3)] == [0, 1, 2] and not ds.packed
    with pytest.raises(IndexError, match="index 3 is out of range"):
        ds[3]
    packed = PackedDataset([{"tokens": [1, 2], "labels": [1, 2]}], max_seq_len=4)
    assert ConcatDataset([packed, packed]).packed
    with pytest.raises(DataError, match="mix of packed and non-packed"):
        ConcatDataset([packed, [{"i": 0}]])


def test_base_tokenizers_have_torchtunes_api(sp_model, tiktoken_file, qwen_files, tmp_path):
    import json

    from tuner.data.tokenizers import Llama3Tokenizer
    from tuner.data.tokenizers._backends import parse_hf_tokenizer_json
    from tuner.data.tokenizers.llama3 import CL100K_PATTERN
    from tuner.modules.transforms.tokenizers import (
        HuggingFaceBaseTokenizer,
        SentencePieceBaseTokenizer,
        TikTokenBaseTokenizer,
    )

    sp = SentencePieceBaseTokenizer(sp_model)
    ids = sp.encode("Hello world", add_bos=True, add_eos=True)
    assert ids[0] == sp.bos_id and ids[-1] == sp.eos_id and sp.decode(ids) == "Hello world"
    assert sp.encodes_whitespace
    # A continuation without the space SentencePiece puts before the first piece.
    plain, trimmed = sp.encode("world", False, False), sp.encode("world", False, False, trim_leading_whitespace=True)
    assert sp.spm_model.id_to_piece(plain[0]).startswith("\u2581") and not sp.spm_model.id_to_piece(
        trimmed[0]
    ).startswith("\u2581")
    assert sp.decode(trimmed) == "world"
    tt = TikTokenBaseTokenizer(tiktoken_file, "t", CL100K_PATTERN, bos_id=0, eos_id=1, special_tokens={"<|x|>": 5000})
    assert tt.base_vocab_size == tt.num_base_tokens and tt.encode("hi <|x|>", add_eos=False)[-1] == 5000
    assert tt.decode(tt.encode("hi there", add_bos=False)) == "hi there"  # stops at EOS
    with pytest.raises(DataError, match="<\\|begin_of_text\\|> missing from special_tokens"):
        Llama3Tokenizer(tiktoken_file, special_tokens={"<|end_of_text|>": 1})
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>"}}))
    hf = HuggingFaceBaseTokenizer(qwen_files["json"], tokenizer_config_json_path=str(config))
    specials = parse_hf_tokenizer_json(qwen_files["json"])
    assert (hf.bos_id, hf.eos_id) == (specials["<|im_start|>"], specials["<|im_end|>"])
    assert hf.encode("hi")[0] == hf.bos_id and hf.encode("hi", add_bos=False, add_eos=False) == hf.encode("hi")[1:-1]
    with pytest.raises(DataError, match="At least one of tokenizer_config_json_path or generation_config_path"):
        HuggingFaceBaseTokenizer(qwen_files["json"])


@pytest.mark.parametrize("transform", ["InputOutputToMessages", "ShareGPTToMessages", "OpenAIToMessages"])
def test_image_dir_is_one_clear_error(transform):
    import tuner.data.messages as messages

    with pytest.raises(DataError, match="image_dir is for image datasets") as caught:
        getattr(messages, transform)(image_dir="/tmp/images")
    assert caught.value.fix == "remove image_dir"
    getattr(messages, transform)()  # without it, the transform builds


def test_image_options_only_where_torchtune_takes_them():
    """ShareGPT/OpenAI accept torchtune's image options (unused: images are refused); the
    input/output transform, which has none in torchtune, names the unknown argument."""
    from tuner.data.messages import InputOutputToMessages, OpenAIToMessages, ShareGPTToMessages

    assert ShareGPTToMessages(image_tag="<image>").column_map["conversations"] == "conversations"
    assert OpenAIToMessages(column_map={"messages": "chat"}).column_map["messages"] == "chat"
    with pytest.raises(DataError, match=r"InputOutputToMessages got unknown argument\(s\) \['image_tag'\]"):
        InputOutputToMessages(image_tag="<image>")
    with pytest.raises(DataError, match="column_map"):
        InputOutputToMessages(column_map={"question": "q"})
