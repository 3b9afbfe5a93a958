"""torchtune's older path ``torchtune.modules.tokenizers`` (now ``modules.transforms.tokenizers``)."""

from tuner.modules.transforms.tokenizers import (  # noqa: F401
    BaseTokenizer,
    HuggingFaceBaseTokenizer,
    ModelTokenizer,
    SentencePieceBaseTokenizer,
    TikTokenBaseTokenizer,
    parse_hf_tokenizer_json,
    tokenize_messages_no_special_tokens,
)
