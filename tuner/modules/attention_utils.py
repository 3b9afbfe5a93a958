"""torchtune's ``torchtune.modules.attention_utils`` names.

``_SUPPORTS_FLEX_ATTENTION`` says whether FlexAttention's fast path can run here (a CUDA GPU of
compute capability 7.5 or newer), as torchtune's flag does; tuner's packed collate takes
``use_flex`` explicitly and builds a boolean mask by default.
"""

import torch

from tuner.data.packing import packed_block_causal_mask  # noqa: F401

_SUPPORTS_FLEX_ATTENTION = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (7, 5)
