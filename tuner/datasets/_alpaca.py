"""torchtune's module path ``torchtune.datasets._alpaca``; the names live in `tuner.datasets._instruct`
and `tuner.data.messages`."""

from tuner.data.messages import AlpacaToMessages  # noqa: F401
from tuner.datasets._instruct import alpaca_cleaned_dataset, alpaca_dataset  # noqa: F401
