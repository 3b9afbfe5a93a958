"""torchtune's module path ``torchtune.data._common``; the name lives in `tuner.data.messages`."""

from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX  # noqa: F401
