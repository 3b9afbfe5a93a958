"""Model zoo: one generic decoder (``TransformerDecoder``) and one small module per family.

Families (``tuner.models.<family>``): llama2, llama3, llama3_1, llama3_2, llama3_3, mistral, qwen2_5,
gemma2, phi3, smollm2. Each module declares one ``FAMILY`` spec (`tuner.models.spec`), from which
its builders are generated: a component builder taking the dimensions (``llama3_2(vocab_size, ...)``),
builders per size (``llama3_2_1b()``), and ``lora_*`` / ``qlora_*`` versions of both, which build
the base model and call ``tuner.peft.apply_lora``. `tuner.models.families` looks families up.

Using a model:

* ``model(tokens, mask=None, input_pos=None) -> logits``; ``model.hidden(...)`` and
  ``model.project(hidden)`` split it for memory-lean losses. ``mask``: None (causal; flash SDPA),
  bool ``[b, s, s]`` (True = may attend), or a FlexAttention ``BlockMask`` (packed sequences).
* Tied embeddings (Llama 3.2, Qwen2.5 <= 3B, Gemma 2, SmolLM2): ``model.output`` is a
  ``TiedLinear`` that owns no parameter and reads ``tok_embeddings.weight`` at call time; the state
  dict has no ``output.weight``. ``model.tie_word_embeddings`` tells which.
* Built on the meta device: after ``model.to_empty(device=...)`` call ``model.rope_init()`` to
  fill the rotary tables (non-persistent buffers, never in checkpoints).
* Generation: ``setup_caches(batch_size, dtype, max_seq_len)``, ``reset_caches()``,
  ``remove_caches()``, ``caches_are_enabled()``; or just ``tuner.generation.generate``.

Checkpoint formats live in `tuner.checkpoint`: ``hf_keys`` / ``meta_keys`` (HF and Meta layouts,
adapters included, Phi-3 fusing) and ``hf_config`` (a model from / as an HF ``config.json``).
"""

from tuner.models.attention import MultiHeadAttention
from tuner.models.kv_cache import KVCache
from tuner.models.mlp import FeedForward
from tuner.models.norms import RMSNorm
from tuner.models.rope import RotaryPositionalEmbeddings
from tuner.models.transformer import TiedLinear, TransformerDecoder, TransformerSelfAttentionLayer

__all__ = [
    "FeedForward",
    "KVCache",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryPositionalEmbeddings",
    "TiedLinear",
    "TransformerDecoder",
    "TransformerSelfAttentionLayer",
]
