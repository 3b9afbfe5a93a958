"""torchtune's ``torchtune.modules.transforms`` names: `Transform` (from `tuner.data.transforms`)
and ``transforms.tokenizers``."""

from tuner.data.transforms import Transform  # noqa: F401
