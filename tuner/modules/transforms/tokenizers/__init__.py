"""torchtune's ``torchtune.modules.transforms.tokenizers`` names, from `tuner.data.tokenizers`.

``SentencePieceBaseTokenizer`` and ``TikTokenBaseTokenizer`` are tuner's SentencePiece and
tiktoken backends, which follow torchtune's API; special-token strings in text are recognised
(as HF tokenizers do), where torchtune's encode them as text.
"""

from tuner.data.tokenizers import (  # noqa: F401
    BaseTokenizer,
    HuggingFaceBaseTokenizer,
    ModelTokenizer,
    tokenize_messages_no_special_tokens,
)
from tuner.data.tokenizers._backends import SentencePieceBackend as SentencePieceBaseTokenizer  # noqa: F401
from tuner.data.tokenizers._backends import TikTokenBackend as TikTokenBaseTokenizer  # noqa: F401
from tuner.data.tokenizers._backends import parse_hf_tokenizer_json  # noqa: F401
