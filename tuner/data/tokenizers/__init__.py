"""Tokenizer builders, one per model family, and the engines under them.

``llama2_tokenizer``, ``mistral_tokenizer`` (SentencePiece), ``llama3_tokenizer`` (tiktoken, for
Llama 3, 3.1, 3.2), ``qwen2_5_tokenizer``, ``qwen3_tokenizer``, ``smollm2_tokenizer``, ``gemma2_tokenizer``,
``phi3_mini_tokenizer`` (HF tokenizer.json). Each returns a `FamilyTokenizer` whose
``tokenize_messages`` gives the ids of the family's chat reference (its HF chat template; Mistral's
own ``mistral_common``) plus a loss mask.
"""

from tuner.data.tokenizers._backends import HFBackend, HuggingFaceBaseTokenizer, SentencePieceBackend, TikTokenBackend
from tuner.data.tokenizers._base import (
    BaseTokenizer,
    FamilyTokenizer,
    ModelTokenizer,
    tokenize_messages_no_special_tokens,
)
from tuner.data.tokenizers._chatml import ChatMLFormat
from tuner.data.tokenizers.gemma import gemma_tokenizer
from tuner.data.tokenizers.gemma2 import Gemma2Format, gemma2_tokenizer
from tuner.data.tokenizers.llama2 import Llama2ChatTemplate, Llama2Format, llama2_tokenizer
from tuner.data.tokenizers.llama3 import Llama3Format, Llama3Tokenizer, llama3_special_tokens, llama3_tokenizer
from tuner.data.tokenizers.mistral import MistralChatTemplate, MistralFormat, mistral_tokenizer
from tuner.data.tokenizers.phi3 import Phi3Format, phi3_mini_tokenizer
from tuner.data.tokenizers.qwen2_5 import qwen2_5_tokenizer
from tuner.data.tokenizers.qwen3 import Qwen3Format, qwen3_tokenizer
from tuner.data.tokenizers.smollm2 import smollm2_tokenizer

__all__ = [
    "BaseTokenizer",
    "FamilyTokenizer",
    "HuggingFaceBaseTokenizer",
    "Llama2ChatTemplate",
    "Llama3Tokenizer",
    "MistralChatTemplate",
    "ModelTokenizer",
    "tokenize_messages_no_special_tokens",
    "HFBackend",
    "SentencePieceBackend",
    "TikTokenBackend",
    "ChatMLFormat",
    "Gemma2Format",
    "Llama2Format",
    "Llama3Format",
    "MistralFormat",
    "Phi3Format",
    "Qwen3Format",
    "gemma_tokenizer",
    "gemma2_tokenizer",
    "llama2_tokenizer",
    "llama3_special_tokens",
    "llama3_tokenizer",
    "mistral_tokenizer",
    "phi3_mini_tokenizer",
    "qwen2_5_tokenizer",
    "qwen3_tokenizer",
    "smollm2_tokenizer",
]
