"""Sampling with a KV cache: ``generate`` (whole sequences) and ``stream`` (token by token)."""
from tuner.generation.generate import generate, stream
from tuner.generation.sampling import sample_next_token

__all__ = ["generate", "sample_next_token", "stream"]
