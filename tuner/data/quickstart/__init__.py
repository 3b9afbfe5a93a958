"""The quickstart's own instruction dataset (written by `generate.py`): file paths and answer format.

``train.json`` (alpaca columns instruction/input/output) trains the fixed response shape
``ANSWER: <x>\\nWHY: <sentence>``; ``eval.json`` holds held-out prompts; `ANSWER_RE` checks a
generated response (whitespace-stripped) against that shape.
"""
from tuner.data.quickstart.generate import ANSWER_PATTERN, ANSWER_RE, DEMO_PROMPT, EVAL_FILE, TRAIN_FILE

__all__ = ["ANSWER_PATTERN", "ANSWER_RE", "DEMO_PROMPT", "EVAL_FILE", "TRAIN_FILE"]
