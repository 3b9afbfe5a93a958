"""The training core shared by every recipe: loop, optimizers, schedulers, precision, memory
features, losses, metric loggers and placement (one device or FSDP2)."""
