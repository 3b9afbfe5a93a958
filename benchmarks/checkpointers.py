"""A checkpointer for benchmarks that read real weight files but must not write any."""

from __future__ import annotations

from typing import Any

from tuner.checkpoint import HFCheckpointer


class LoadOnlyHFCheckpointer(HFCheckpointer):
    """tuner's HF checkpointer, loading as it does, saving nothing: the benchmark's loss-parity run
    loads the checkpoint torchtune loads, and its end-of-epoch save (GBs for a full fine-tune) would
    only add untimed minutes."""

    def save_checkpoint(self, state: dict, step: int, epoch: int, adapter_only: bool = False, **_: Any) -> None:
        return None
