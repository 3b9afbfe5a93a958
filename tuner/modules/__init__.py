"""torchtune's ``torchtune.modules`` names, for code written against torchtune.

Each name is tuner's own implementation, re-exported under torchtune's path: the model building
blocks are `tuner.models`' (``TransformerDecoder``, ``RMSNorm``, ``KVCache``, ...), the rest live in
`tuner.peft`, `tuner.data`, `tuner.quantization` and `tuner.training`. Submodules: ``peft``, ``loss``,
``transforms`` (``Transform`` and ``transforms.tokenizers``), ``tokenizers`` (torchtune's older
path), ``attention_utils``, ``common_utils``, ``feed_forward``. Vision and fusion modules
(multimodal) are not provided.
"""

from tuner.data.packing import packed_block_causal_mask
from tuner.models import *  # noqa: F401,F403
from tuner.models import __all__ as _model_names
from tuner.quantization import reparametrize_as_dtype_state_dict_post_hook

__all__ = [*_model_names, "packed_block_causal_mask", "reparametrize_as_dtype_state_dict_post_hook"]
