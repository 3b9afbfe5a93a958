"""Generation tests reuse the tiny HF models of tests/models/hf_tiny.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
