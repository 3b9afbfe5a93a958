"""torchtune's ``torchtune.modules.feed_forward`` path; `FeedForward` lives in `tuner.models.mlp`."""

from tuner.models.mlp import FeedForward  # noqa: F401
