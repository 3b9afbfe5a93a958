"""The quickstart's own instruction dataset (written by `generate.py`): file paths and answer format.

``train.json`` (alpaca columns instruction/input/output) trains the fixed response shape
``ANSWER: <x>\\nWHY: <sentence>``; ``eval.json`` holds held-out prompts (its first row is
`DEMO_PROMPT`); `ANSWER_RE` checks a generated response (whitespace-stripped) against that shape.
"""

from __future__ import annotations

import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_FILE = HERE / "train.json"
EVAL_FILE = HERE / "eval.json"
# The fixed prompt of the quickstart's before/after demo; never in the training rows. The base
# model answers it in a long sentence; after fine-tuning: "ANSWER: 12\nWHY: 3 x 4 = 12."
DEMO_PROMPT = {"instruction": "What is 3 times 4?", "input": ""}
# A response in the trained format (applied to the generated text, surrounding whitespace stripped).
ANSWER_PATTERN = r"^ANSWER: [^\n]+\nWHY: [^\n]+"
ANSWER_RE = re.compile(ANSWER_PATTERN)

__all__ = ["ANSWER_PATTERN", "ANSWER_RE", "DEMO_PROMPT", "EVAL_FILE", "TRAIN_FILE"]
