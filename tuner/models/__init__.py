"""Model zoo: one generic decoder (``TransformerDecoder``) and one small module per family.

Families (``tuner.models.<family>``): llama2, llama3, llama3_1, llama3_2, mistral, qwen2_5, gemma2,
phi3, smollm2. Key conversion to/from HF and Meta layouts: ``tuner.models.convert``.
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
