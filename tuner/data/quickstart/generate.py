"""Generate the quickstart's instruction dataset: the project's own text, fully deterministic.

Why: the quickstart fine-tunes a real 135M model on CPU for a few minutes, and the user must see
the answer change. Every response here has one fixed shape that the base model never produces by
itself and that a regex can check:

    ANSWER: <short answer>
    WHY: <one short sentence>

The questions are simple (arithmetic, unit conversion, letters of words, even/odd, comparisons),
alpaca-style rows (``instruction``, ``input``, ``output``). ``eval.json`` holds held-out prompts
(none of them in ``train.json``) with the expected output, for the before/after demo and tests.

Run ``python -m tuner.data.quickstart.generate`` to rewrite the two files; a test checks that the
shipped files equal this generator's output.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Callable

from tuner.data.quickstart import ANSWER_PATTERN, ANSWER_RE, DEMO_PROMPT, EVAL_FILE, HERE, TRAIN_FILE  # noqa: F401 (re-exported)

NUM_TRAIN = 320
SEED = 1234

WORDS = (
    "apple river garden window planet yellow bridge forest music orange pencil rocket summer "
    "winter button castle dragon island jacket ladder mirror pocket silver tunnel valley wizard "
    "basket candle circle dinner engine flower guitar hammer kitten lemon market needle "
    "paper rabbit saddle spider tomato violin wallet zipper cloud stone tiger horse sugar "
    "chair table house light green bread water smile train ocean sheep plant beach north "
    "clock honey lunch magic piano queen radio snake tooth uncle video whale yacht zebra "
    "cat dog sun map cup hat pen box key bee"
).split()

Row = dict[str, str]
Task = Callable[[random.Random], Row]


def _row(instruction: str, answer: str, why: str, input_: str = "") -> Row:
    return {"instruction": instruction, "input": input_, "output": f"ANSWER: {answer}\nWHY: {why}"}


def _add(r: random.Random) -> Row:
    a, b = r.randint(2, 99), r.randint(2, 99)
    if r.random() < 0.3:
        return _row("Add the two numbers.", str(a + b), f"{a} + {b} = {a + b}.", f"{a} and {b}")
    return _row(f"What is {a} plus {b}?", str(a + b), f"{a} + {b} = {a + b}.")


def _subtract(r: random.Random) -> Row:
    a, b = sorted((r.randint(2, 99), r.randint(2, 99)), reverse=True)
    return _row(f"What is {a} minus {b}?", str(a - b), f"{a} - {b} = {a - b}.")


def _multiply(r: random.Random) -> Row:
    a, b = r.randint(2, 12), r.randint(2, 12)
    return _row(f"What is {a} times {b}?", str(a * b), f"{a} x {b} = {a * b}.")


_UNITS = (  # (from, to, factor)
    ("kilometers", "meters", 1000),
    ("meters", "centimeters", 100),
    ("kilograms", "grams", 1000),
    ("liters", "milliliters", 1000),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("days", "hours", 24),
    ("weeks", "days", 7),
)


def _convert(r: random.Random) -> Row:
    src, dst, factor = r.choice(_UNITS)
    n = r.randint(2, 15)
    one = src[:-1]
    why = f"1 {one} is {factor} {dst}, so {n} x {factor} = {n * factor}."
    if r.random() < 0.3:
        return _row(f"Convert the amount to {dst}.", f"{n * factor} {dst}", why, f"{n} {src}")
    return _row(f"Convert {n} {src} to {dst}.", f"{n * factor} {dst}", why)


def _length(r: random.Random) -> Row:
    w = r.choice(WORDS)
    why = f"{w} is spelled {'-'.join(w)}."
    if r.random() < 0.3:
        return _row("Count the letters in the word.", str(len(w)), why, w)
    return _row(f'How many letters are in the word "{w}"?', str(len(w)), why)


def _first_letter(r: random.Random) -> Row:
    w = r.choice(WORDS)
    return _row(f'What is the first letter of "{w}"?', w[0], f"{w} starts with {w[0]}.")


def _last_letter(r: random.Random) -> Row:
    w = r.choice(WORDS)
    return _row(f'What is the last letter of "{w}"?', w[-1], f"{w} ends with {w[-1]}.")


def _parity(r: random.Random) -> Row:
    n = r.randint(2, 199)
    kind, rest = ("even", 0) if n % 2 == 0 else ("odd", 1)
    return _row(f"Is {n} even or odd?", kind, f"{n} divided by 2 leaves a remainder of {rest}.")


def _larger(r: random.Random) -> Row:
    a, b = r.sample(range(2, 200), 2)
    hi, lo = max(a, b), min(a, b)
    return _row(f"Which number is larger, {a} or {b}?", str(hi), f"{hi} is greater than {lo}.")


TASKS: tuple[Task, ...] = (
    _add,
    _subtract,
    _multiply,
    _convert,
    _length,
    _first_letter,
    _last_letter,
    _parity,
    _larger,
)


def _key(row: Row) -> tuple[str, str]:
    return row["instruction"], row["input"]


def build() -> tuple[list[Row], list[Row]]:
    """(train rows, held-out eval rows): the same lists on every run and every platform."""
    r = random.Random(SEED)
    eval_rows = [_row(DEMO_PROMPT["instruction"], "12", "3 x 4 = 12.")]
    seen = {_key(eval_rows[0])}
    for task in TASKS:  # two held-out prompts per task
        count = 0
        while count < 2:
            row = task(r)
            if _key(row) not in seen:
                seen.add(_key(row))
                eval_rows.append(row)
                count += 1
    train: list[Row] = []
    while len(train) < NUM_TRAIN:
        row = TASKS[len(train) % len(TASKS)](r)
        if _key(row) not in seen:
            seen.add(_key(row))
            train.append(row)
    return train, eval_rows


def render(rows: list[Row]) -> str:
    """The exact text of a shipped JSON file."""
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write train.json and eval.json next to this file (or into the folder given as argument)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else HERE
    train, eval_rows = build()
    (out / TRAIN_FILE.name).write_text(render(train), encoding="utf-8")
    (out / EVAL_FILE.name).write_text(render(eval_rows), encoding="utf-8")
    print(f"wrote {len(train)} training rows and {len(eval_rows)} held-out prompts to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
