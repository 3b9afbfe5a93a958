"""torchtune's ``torchtune.models.gemma`` path for its tokenizer (torchtune's Gemma and Gemma 2
configs name ``gemma_tokenizer``). tuner's Gemma 2 models are in `tuner.models.gemma2`; Gemma 1
models are not provided."""

from tuner.data.tokenizers.gemma import gemma_tokenizer  # noqa: F401
