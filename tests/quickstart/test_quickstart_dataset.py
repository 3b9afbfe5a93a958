"""The quickstart dataset: shipped files equal the generator's output, rows are sane, held out."""

from __future__ import annotations

import json
import re

from tuner.data.quickstart import generate


def test_shipped_files_equal_generator_output(tmp_path):
    assert generate.main([str(tmp_path)]) == 0
    for shipped in (generate.TRAIN_FILE, generate.EVAL_FILE):
        assert shipped.read_text(encoding="utf-8") == (tmp_path / shipped.name).read_text(encoding="utf-8"), (
            f"{shipped} is stale: run python -m tuner.data.quickstart.generate"
        )
    assert generate.TRAIN_FILE.stat().st_size < 200_000


def test_rows_follow_the_format_and_eval_is_held_out():
    train = json.loads(generate.TRAIN_FILE.read_text(encoding="utf-8"))
    held_out = json.loads(generate.EVAL_FILE.read_text(encoding="utf-8"))
    assert len(train) == generate.NUM_TRAIN and len(held_out) >= 10
    for row in train + held_out:
        assert set(row) == {"instruction", "input", "output"}
        assert generate.ANSWER_RE.match(row["output"]), row
        assert row["output"].count("\n") == 1
    keys = [(r["instruction"], r["input"]) for r in train]
    assert len(set(keys)) == len(keys)
    held_keys = {(r["instruction"], r["input"]) for r in held_out}
    assert not held_keys & set(keys)
    assert (generate.DEMO_PROMPT["instruction"], generate.DEMO_PROMPT["input"]) in held_keys
    # every task type is in both sets
    assert len({r["instruction"].split()[0] for r in train}) >= 5


def test_answers_are_correct():
    """Spot-check the generated answers against an independent computation."""
    train, held_out = generate.build()
    checked = 0
    for row in train + held_out:
        answer = row["output"].split("\n")[0].removeprefix("ANSWER: ")
        m = re.fullmatch(r"What is (\d+) (plus|minus|times) (\d+)\?", row["instruction"])
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
            assert int(answer) == {"plus": a + b, "minus": a - b, "times": a * b}[op]
            checked += 1
        m = re.fullmatch(r'How many letters are in the word "(\w+)"\?', row["instruction"])
        if m:
            assert int(answer) == len(m[1])
            checked += 1
        m = re.fullmatch(r"Is (\d+) even or odd\?", row["instruction"])
        if m:
            assert answer == ("even" if int(m[1]) % 2 == 0 else "odd")
            checked += 1
    assert checked > 100


def test_regex_rejects_plain_answers():
    assert not generate.ANSWER_RE.match("The capital of France is Paris.")
    assert not generate.ANSWER_RE.match("42")
    assert generate.ANSWER_RE.match("ANSWER: 12\nWHY: 3 x 4 = 12.")
