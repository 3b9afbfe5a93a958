"""Datasets over datasets.load_dataset: real instruction data (tuner's quickstart rows), local formats,
masking, errors."""

from __future__ import annotations

import json

import pytest
import torch

from tests.real_data import ALPACA as ALPACA_JSON
from tests.real_data import alpaca_rows
from tuner.data import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT, padded_collate_sft
from tuner.data.tokenizers import smollm2_tokenizer
from tuner.datasets import (
    alpaca_dataset,
    chat_dataset,
    instruct_dataset,
    text_completion_dataset,
)
from tuner.errors import TunerError


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return smollm2_tokenizer(str(smollm2_dir), max_seq_len=512)


def _trained_text(tok, sample):
    return tok.decode([label for label in sample["labels"] if label != -100], skip_special_tokens=False)


def test_real_alpaca_data(tok):
    rows = alpaca_rows()
    ds = alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON), train_on_input=False)
    assert len(ds) == len(rows) > 100
    with_input = next(i for i, r in enumerate(rows) if r["input"])
    for i in (0, with_input):  # both prompt templates (no input, input)
        s = ds[i]
        assert len(s["tokens"]) == len(s["labels"]) <= 512
        r = rows[i]
        template = ALPACA_PROMPT_INPUT if r["input"] else ALPACA_PROMPT_NO_INPUT
        prompt = template.format(instruction=r["instruction"], input=r["input"])
        want, _ = tok.tokenize_messages(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": r["output"]}]
        )
        assert s["tokens"] == want[:512]
        # Only the answer and its end-of-turn are trained.
        assert _trained_text(tok, s).startswith("<|im_start|>assistant\n" + r["output"][:20])
        assert "### Instruction" not in _trained_text(tok, s)
    # train_on_input=True trains on the prompt too.
    ds_all = alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON))
    assert "### Instruction" in _trained_text(tok, ds_all[with_input])
    assert ds_all[with_input]["tokens"] == ds[with_input]["tokens"]


def test_real_chat_data(tok, chat_jsonl):
    ds = chat_dataset(tok, source="json", data_files=str(chat_jsonl), conversation_style="openai")
    lines = chat_jsonl.read_text().splitlines()
    assert len(ds) == len(lines) == len(alpaca_rows())
    row = json.loads(lines[1])
    s = ds[1]
    assert s["tokens"] == tok.tokenize_messages(row["messages"])[0]
    trained = _trained_text(tok, s)
    assert row["messages"][1]["content"] in trained and row["messages"][0]["content"] not in trained
    assert trained.endswith("<|im_end|>\n")


def test_sharegpt_jsonl_and_column_map(tok, tmp_path):
    p = tmp_path / "sg.jsonl"
    rows = [
        {"conv": [{"from": "system", "value": "S"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    ds = chat_dataset(tok, source="json", data_files=str(p), conversation_style="sharegpt", conversation_column="conv")
    want = tok.tokenize_messages(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    )[0]
    assert ds[0]["tokens"] == want
    assert _trained_text(tok, ds[0]) == "<|im_start|>assistant\nYo<|im_end|>\n"


def test_instruct_csv_parquet_and_text(tok, tmp_path):
    import datasets

    data = {"question": ["What is 1+1?", "Name a color."], "answer": ["2", "Blue"]}
    datasets.Dataset.from_dict(data).to_csv(str(tmp_path / "d.csv"))
    datasets.Dataset.from_dict(data).to_parquet(str(tmp_path / "d.parquet"))
    cm = {"input": "question", "output": "answer"}
    a = instruct_dataset(tok, source="csv", data_files=str(tmp_path / "d.csv"), column_map=cm)
    b = instruct_dataset(tok, source="parquet", data_files=str(tmp_path / "d.parquet"), column_map=cm)
    c = instruct_dataset(tok, source=str(tmp_path / "d.csv"), column_map=cm)  # a file path as source
    assert a[1] == b[1] == c[1]
    assert _trained_text(tok, a[1]) == "<|im_start|>assistant\nBlue<|im_end|>\n"

    (tmp_path / "t.txt").write_text("first line of text\nsecond line\n")
    t = text_completion_dataset(tok, source="text", data_files=str(tmp_path / "t.txt"))
    assert len(t) == 2
    assert t[0]["tokens"] == tok.encode("first line of text") and t[0]["labels"] == t[0]["tokens"]


def test_truncation_filter_and_split(tmp_path, smollm2_dir):
    tok = smollm2_tokenizer(str(smollm2_dir), max_seq_len=16)
    ds = alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON))
    assert all(len(ds[i]["tokens"]) == 16 for i in range(3))
    kept = alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON), filter_fn=lambda r: r["input"] == "")
    assert len(kept) == sum(r["input"] == "" for r in alpaca_rows()) and 0 < len(kept) < len(ds)
    part = alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON), split="train[:10]")
    assert len(part) == 10


def test_collate_pads(tok):
    ds = alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON), train_on_input=False)
    other = next(i for i in range(1, len(ds)) if len(ds[i]["tokens"]) != len(ds[0]["tokens"]))  # something to pad
    pair = [ds[0], ds[other]]
    batch = padded_collate_sft(pair, padding_idx=tok.pad_id)
    n0, n1 = len(pair[0]["tokens"]), len(pair[1]["tokens"])
    assert batch["tokens"].dtype == torch.long and batch["tokens"].shape == (2, max(n0, n1))
    short = 0 if n0 < n1 else 1
    n = min(n0, n1)
    assert (batch["tokens"][short, n:] == tok.pad_id).all() and (batch["labels"][short, n:] == -100).all()
    assert batch["labels"][short, :n].tolist() == pair[short]["labels"]


# ---------------------------------------------------------------- errors
def test_malformed_row_names_index_and_column(tok, tmp_path):
    p = tmp_path / "bad.json"
    p.write_text(
        json.dumps(
            [
                {"instruction": "ok", "input": "", "output": "fine"},
                {"instruction": "no answer here", "input": "", "output": None},
            ]
        )
    )
    ds = alpaca_dataset(tok, source="json", data_files=str(p))
    ds[0]
    with pytest.raises(TunerError, match=r"bad.json, row 1: column 'output' must be a string"):
        ds[1]
    p.write_text(json.dumps([{"instruction": "x", "input": "", "output": "   "}]))
    with pytest.raises(TunerError, match=r"row 0: column 'output' is empty"):
        alpaca_dataset(tok, source="json", data_files=str(p))[0]


def test_missing_column_suggests_column_map(tok, tmp_path):
    p = tmp_path / "cols.json"
    p.write_text(json.dumps([{"prompt": "a", "response": "b"}]))
    with pytest.raises(TunerError, match=r"cols.json has no column 'input'.*column_map=\{'input'"):
        instruct_dataset(tok, source="json", data_files=str(p))
    with pytest.raises(TunerError, match=r"no column 'resp'.*column_map\['output'\]"):
        instruct_dataset(tok, source="json", data_files=str(p), column_map={"input": "prompt", "output": "resp"})
    with pytest.raises(TunerError, match="unknown key"):
        instruct_dataset(tok, source="json", data_files=str(p), column_map={"question": "prompt"})


def test_bad_turns(tok, tmp_path):
    p = tmp_path / "turns.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    with pytest.raises(TunerError, match="row 0: turn 0 of column 'messages' has unknown role 'robot'"):
        chat_dataset(tok, source="json", data_files=str(p))[0]
    with pytest.raises(TunerError, match="conversation_style"):
        chat_dataset(tok, source="json", data_files=str(p), conversation_style="vicuna")


def test_missing_unreadable_empty_files(tok, tmp_path):
    with pytest.raises(TunerError, match="data file not found: .*nope.json"):
        alpaca_dataset(tok, source="json", data_files=str(tmp_path / "nope.json"))
    bad = tmp_path / "broken.json"
    bad.write_text('[{"instruction": "x", ')
    with pytest.raises(TunerError, match="cannot load json file"):
        alpaca_dataset(tok, source="json", data_files=str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TunerError):
        chat_dataset(tok, source="json", data_files=str(empty))


def test_hub_name_offline_is_clear(tok, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        TunerError,
        match=r"dataset 'tatsu-lab/alpaca' comes from the Hugging Face Hub, which cannot be reached"
        r".*dataset.source=json dataset.data_files",
    ):
        alpaca_dataset(tok)


def test_packed_needs_max_seq_len(tmp_path, smollm2_dir):
    tok = smollm2_tokenizer(str(smollm2_dir))
    with pytest.raises(TunerError, match="max_seq_len"):
        alpaca_dataset(tok, source="json", data_files=str(ALPACA_JSON), packed=True)
