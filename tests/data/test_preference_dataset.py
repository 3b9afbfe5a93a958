"""Preference datasets: torchtune's conversation layout and TRL's text layout give the same pairs,
the prompt is masked, torchtune's builders and transform names resolve, and bad rows name the row
and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.real_data import preference_rows, smollm2_dir, write_preference_json
from tuner.config import instantiate
from tuner.errors import ConfigError, DataError

ROWS = preference_rows()[:3]


@pytest.fixture(scope="module")
def tokenizer():
    path = str(smollm2_dir() / "tokenizer.json")
    return instantiate({"_component_": "tuner.models.smollm2.smollm2_tokenizer", "path": path, "max_seq_len": 256})


def _build(name: str, tokenizer, path: Path, **kw):
    return instantiate({"_component_": name, "source": "json", "data_files": str(path), **kw}, tokenizer)


def test_text_and_conversation_layouts_give_the_same_pairs_with_the_prompt_masked(tokenizer, tmp_path):
    text = _build("tuner.datasets.preference_dataset", tokenizer, write_preference_json(tmp_path / "t.json", ROWS))
    conv = _build(
        "torchtune.datasets.preference_dataset",
        tokenizer,
        write_preference_json(tmp_path / "c.json", ROWS, as_messages=True),
    )
    assert len(text) == len(conv) == 3
    for i, row in enumerate(ROWS):
        assert text[i] == conv[i]
        for kind in ("chosen", "rejected"):
            ids, labels = text[i][f"{kind}_input_ids"], text[i][f"{kind}_labels"]
            trained = [t for t, label in zip(ids, labels) if label != -100]
            scored = tokenizer.decode(trained).strip()  # the assistant turn: its header and the response
            assert scored.endswith(row[kind]) and row["prompt"] not in scored
            assert row["prompt"] in tokenizer.decode(ids)
    on_input = _build("tuner.datasets.preference_dataset", tokenizer, tmp_path / "t.json", train_on_input=True)[0][
        "chosen_labels"
    ]
    assert sum(label != -100 for label in on_input) > sum(label != -100 for label in text[0]["chosen_labels"])


def test_stack_exchange_layout(tokenizer, tmp_path):
    rows = [{"question": r["prompt"], "response_j": r["chosen"], "response_k": r["rejected"]} for r in ROWS]
    path = tmp_path / "se.json"
    path.write_text(json.dumps(rows))
    pairs = _build("torchtune.datasets.stack_exchange_paired_dataset", tokenizer, path)
    expected = _build("tuner.datasets.preference_dataset", tokenizer, write_preference_json(tmp_path / "t.json", ROWS))
    assert [pairs[i] for i in range(3)] == [expected[i] for i in range(3)]
    from tuner.data import StackExchangePairedToMessages

    messages = StackExchangePairedToMessages()({"prompt": "q", "chosen": "a", "rejected": "b"})
    assert [m.role for m in messages["chosen"]] == ["user", "assistant"] and messages["chosen"][0].masked


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "hi", "chosen": "a", "rejected": 3}, "row 0: column 'rejected' must be a response text"),
        ({"chosen": "a", "rejected": "b"}, "row 0: row has no column 'prompt'"),
        ({"prompt": "hi", "chosen": "a"}, "row 0: row has no column 'rejected'"),
        ({"prompt": "x " * 400, "chosen": "a", "rejected": "b"}, "no token left to score"),
    ],
)
def test_bad_rows_name_the_row_and_the_fix(tokenizer, tmp_path, row, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([row]))
    with pytest.raises(DataError, match=match) as err:
        _build("tuner.datasets.preference_dataset", tokenizer, path)[0]
    assert err.value.fix


def test_packing_is_refused(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="cannot be packed"):
        _build("tuner.datasets.preference_dataset", tokenizer, write_preference_json(tmp_path / "t.json"), packed=True)
