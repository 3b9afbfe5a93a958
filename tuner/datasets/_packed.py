"""torchtune's module path ``torchtune.datasets._packed``; `PackedDataset` lives in `tuner.data.packing`."""

from tuner.data.packing import PackedDataset  # noqa: F401
