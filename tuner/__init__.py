"""tuner: config-driven fine-tuning of open-weight LLMs (full, LoRA and variants, QLoRA)."""

import logging

__version__ = "0.1.0"

# bitsandbytes warns at import, on CPUs with AVX512-BF16, that an optional hub-downloaded CPU
# kernel is missing; its built-in fallback is what tuner uses on CPU, so the warning is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
