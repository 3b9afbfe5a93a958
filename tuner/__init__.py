"""tuner: config-driven fine-tuning of open-weight LLMs (full, LoRA and variants, QLoRA)."""

__version__ = "0.1.0"
