"""torchtune's ``torchtune.modules`` names, for code written against torchtune.

Each name is tuner's own implementation, re-exported under torchtune's path (the classes live in
`tuner.models`, `tuner.peft`, `tuner.data` and `tuner.training`). Submodules: ``peft``, ``loss``,
``transforms`` (``Transform`` and ``transforms.tokenizers``), ``tokenizers`` (torchtune's older
path), ``attention_utils``, ``common_utils``, ``feed_forward``. Vision and fusion modules
(multimodal) are not provided.
"""
from tuner.data.packing import packed_block_causal_mask
from tuner.models import (
    FeedForward,
    KVCache,
    MultiHeadAttention,
    RMSNorm,
    RotaryPositionalEmbeddings,
    TiedLinear,
    TransformerDecoder,
    TransformerSelfAttentionLayer,
)
from tuner.quantization import reparametrize_as_dtype_state_dict_post_hook

__all__ = [
    "FeedForward",
    "KVCache",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryPositionalEmbeddings",
    "TiedLinear",
    "TransformerDecoder",
    "TransformerSelfAttentionLayer",
    "packed_block_causal_mask",
    "reparametrize_as_dtype_state_dict_post_hook",
]
