"""SmolLM2 (135M, 360M, 1.7B): the Llama architecture with tied embeddings."""

from __future__ import annotations

from tuner.data.tokenizers import ChatMLFormat, smollm2_tokenizer  # noqa: F401  (torchtune path)
from tuner.models.spec import FamilySpec, Size

FAMILY = FamilySpec(
    name="smollm2",
    title="SmolLM2",
    model_type="SMOLLM2",
    hf_model_type="llama",
    hf_architecture="LlamaForCausalLM",
    required=("vocab_size", "num_layers", "num_heads", "num_kv_heads", "embed_dim", "intermediate_dim", "max_seq_len"),
    defaults=dict(attn_dropout=0.0, rope_base=100_000.0, norm_eps=1e-5, tie_word_embeddings=True),
    tokenizer="tuner.models.smollm2.smollm2_tokenizer",
    chat_format=ChatMLFormat,
    sizes=(
        Size(
            "135m",
            "SmolLM2 135M Instruct",
            dict(
                vocab_size=49_152,
                num_layers=30,
                num_heads=9,
                num_kv_heads=3,
                embed_dim=576,
                intermediate_dim=1536,
                max_seq_len=8192,
            ),
            params=134_515_008,
            hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        Size(
            "360m",
            "SmolLM2 360M Instruct",
            dict(
                vocab_size=49_152,
                num_layers=32,
                num_heads=15,
                num_kv_heads=5,
                embed_dim=960,
                intermediate_dim=2560,
                max_seq_len=8192,
            ),
            params=361_821_120,
            hf_repo="HuggingFaceTB/SmolLM2-360M-Instruct",
        ),
        Size(
            "1_7b",
            "SmolLM2 1.7B Instruct",
            dict(
                vocab_size=49_152,
                num_layers=24,
                num_heads=32,
                num_kv_heads=32,
                embed_dim=2048,
                intermediate_dim=8192,
                max_seq_len=8192,
                rope_base=130_000.0,
            ),
            params=1_711_376_384,
            hf_repo="HuggingFaceTB/SmolLM2-1.7B-Instruct",
        ),
    ),
)
globals().update(FAMILY.builders)
