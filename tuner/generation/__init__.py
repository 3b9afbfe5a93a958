"""Generation: sampling with a KV cache (``generate``, ``stream``: `tuner.models.decoding`), text in and out
(``prompt_tokens``, ``generate_text`` with streaming), and inference-time model loading with
adapters merged in and switched without reloading the base (``load_inference_model``,
``AdapterSwitcher``), and batches whose rows use different adapters over one unmerged base
(``MixedAdapters``, ``generate_batch``). The recipes generate / eval / merge are built on these."""

from tuner.generation.adapters import Adapter, AdapterSwitcher, check_adapter_fits, load_adapter, merge_adapter_into
from tuner.generation.batch import generate_batch
from tuner.generation.loading import InferenceModel, load_inference_model
from tuner.generation.multi_adapter import MixedAdapters
from tuner.generation.text import GenerationResult, IncrementalDecoder, generate_text, prompt_tokens
from tuner.models.decoding import generate, sample_next_token, stream

__all__ = [
    "Adapter",
    "AdapterSwitcher",
    "GenerationResult",
    "IncrementalDecoder",
    "InferenceModel",
    "MixedAdapters",
    "check_adapter_fits",
    "generate",
    "generate_batch",
    "generate_text",
    "load_adapter",
    "load_inference_model",
    "merge_adapter_into",
    "prompt_tokens",
    "sample_next_token",
    "stream",
]
