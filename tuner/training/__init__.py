"""The training core shared by every recipe: loop, optimizers, schedulers, precision, memory
features, losses, metric loggers, profiler and placement (one device or FSDP2)."""
from tuner.training.profiler import setup_torch_profiler

__all__ = ["setup_torch_profiler"]
