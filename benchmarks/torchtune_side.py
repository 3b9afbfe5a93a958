"""torchtune 0.6.1 on the same workload, side by side (``scripts/benchmark.py --compare-torchtune``).

torchtune's own recipe runs as a script in a subprocess, as the anchor figures' runs did
(docs/benchmarks.md; ``python3 <site>/recipes/<recipe>.py --config <site>/recipes/configs/<cfg>.yaml
key=value ...``; its ``tune`` CLI imports kagglehub, which needs kagglesdk). Its inputs are written here:

- an HF-format checkpoint of the workload's shape, written through tuner's own HF conversion
  (``tuner.checkpoint.hf_keys``; no transformers needed), sharded like HF: unpacked, dense random-init
  bf16 weights, written before tuner's run, which loads them too; packed, the weights tuner's run
  started from where they are dense, else (QLoRA) dense random-init bf16 weights;
- a synthetic llama3-style tiktoken ranks file with 128,000 entries (256 bytes + random lowercase
  strings), loaded by ``torchtune.models.llama3.llama3_tokenizer``;
- unpacked: the learnable token batches both tools train on, in the same order, and tuner's initial
  adapter weights (``benchmarks.parity``: loss parity); with ``--packed``, documents of the lengths
  tuner's ``--packed`` data draws (``synthetic_document_length``), each text of exactly the tokens
  that make, with the BOS and EOS torchtune adds, that length, which torchtune packs itself
  (``dataset.packed=True``) into packs of ``seq_len`` positions (speed only: tuner's packs hold
  random tokens, so the losses are not compared).

torchtune logs each step to its DiskLogger as ``Step N | key:value key:value ...``; the median of
``tokens_per_second_per_gpu`` over the steps after the warm-up and the peak of
``peak_memory_alloc`` / ``peak_memory_reserved`` (GiB; each line holds the peak since the line
before, so their maximum is the peak of training; with the "Memory stats after model init" lines of
its output, the peak of the whole run, as tuner's figure is) are its result.

What tokens/s counts. torchtune 0.6.1's recipes (``lora_finetune_single_device.py``,
``full_finetune_single_device.py``) log ``num_tokens / time_per_step`` where ``num_tokens`` sums
``(batch["labels"] != loss_fn.ignore_index)`` over the step's batches (labels before the shift by
one): the positions that are not padding. tuner's benchmark counts ``batch["tokens"].numel()``, every
position. Unpacked, samples have no padding and the two agree. Packed, torchtune's PackedDataset
pads each pack to ``max_seq_len`` with labels -100, so its figure leaves the padding out; the entry's
``tokens_per_s_median`` is then torchtune's per-step figure times positions / its count of that step
(both known from the documents written: `pack_documents`), so that the ratios compare positions/s
(equivalently, step times) on both sides; torchtune's own figure is ``tokens_per_s_median_logged``
and ``tokens_counted`` says which was counted.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuner.errors import TunerError, UsageError
from tuner.training.metric_logging import parse_step_lines

TORCHTUNE_VERSION = "0.6.1"

# tuner workload -> (torchtune recipe, torchtune config)
RECIPES = {
    "lora_1b": ("lora_finetune_single_device", "llama3_2/1B_lora_single_device"),
    "full_1b": ("full_finetune_single_device", "llama3_2/1B_full_single_device"),
    "qlora_8b": ("lora_finetune_single_device", "llama3_1/8B_qlora_single_device"),
}
LORA_RECIPES = {"lora_finetune_single_device"}

NUM_BASE_TOKENS = 128_000  # Meta's Llama 3 ranks file
LLAMA3_VOCAB = 128_256  # + 256 special tokens: the ids torchtune's llama3 tokenizer can emit

# torchtune's packages (torchao 0.11 among them) stay off the benchmark's own path: peft refuses to
# build LoRA layers when it finds a torchao older than 0.16, which would break --compare-hf.
PATH_VARIABLE = "TORCHTUNE_PYTHONPATH"
SETUP_HINT = (
    f"provide torchtune {TORCHTUNE_VERSION} and its runtime packages: on the GPU machine "
    "`bash scripts/device_setup.sh` (installs the wheels carried in .whl/) and run the export line it prints "
    f"(PYTHONPATH=/tmp/site {PATH_VARIABLE}=/tmp/site_tt); elsewhere "
    f"`pip install torchtune=={TORCHTUNE_VERSION} torchao==0.11.0` or set {PATH_VARIABLE} to a folder holding them"
)


def torchtune_env(extra_path: str | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment torchtune runs in: ``base`` (default: this process's) with ``extra_path``
    (default: $TORCHTUNE_PYTHONPATH) in front of its PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    extra = extra_path if extra_path is not None else env.get(PATH_VARIABLE, "")
    parts = [p for p in (extra, env.get("PYTHONPATH", "")) if p]
    if parts:
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


class TorchtuneUnavailable(TunerError):
    """torchtune (or something it imports) cannot be imported by the Python that would run it."""


# ---- finding torchtune ---------------------------------------------------------------------------
_PROBE = (
    "import sys, torchtune, torchdata.stateful_dataloader\n"
    "for name in sys.argv[1:]: __import__(name)\n"
    "print(torchtune.__file__); print(getattr(torchtune, '__version__', '?'))\n"
)


def find_torchtune(
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    also_import: Sequence[str] = (),
    timeout: float = 300,
) -> tuple[Path, str]:
    """``(site, version)`` of the torchtune that ``python`` imports with ``env`` (default: ``torchtune_env()``):
    ``site`` holds the ``torchtune`` and ``recipes`` packages. Raises TorchtuneUnavailable, naming
    the failed import and how to provide it, when torchtune or a module it needs is missing."""
    try:
        proc = subprocess.run(
            [python, "-c", _PROBE, *also_import],
            env=dict(env if env is not None else torchtune_env()),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TorchtuneUnavailable(f"importing torchtune took over {timeout:.0f} s", SETUP_HINT) from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        last = next(
            (ln.strip() for ln in reversed(lines) if re.match(r"\s*\w*(Error|Exception)\b", ln)),
            lines[-1].strip() if lines else f"exit code {proc.returncode}",
        )
        raise TorchtuneUnavailable(f"--compare-torchtune: torchtune is not importable here ({last})", SETUP_HINT)
    init, version = proc.stdout.strip().splitlines()[-2:]
    site = Path(init).resolve().parent.parent
    if not (site / "recipes" / "configs").is_dir():
        raise TorchtuneUnavailable(
            f"--compare-torchtune: torchtune at {site} has no recipes/ beside it",
            f"install the torchtune {TORCHTUNE_VERSION} wheel (it ships recipes/)",
        )
    return site, version


# ---- assets --------------------------------------------------------------------------------------
def _random_dense_state_dict(
    hf_config: Mapping[str, Any],
    model_type: str,
    dtype: torch.dtype,
    device: str,
    seed: int = 0,
    nf4_exact: bool = False,
) -> dict[str, torch.Tensor]:
    """Random weights (normal, std 0.02; norms 1) in tuner keys for the dense model of ``hf_config``;
    with ``nf4_exact``, the decoder layers' linears are weights that both NF4 formats hold exactly
    (`benchmarks.nf4_exact`)."""
    from benchmarks.nf4_exact import is_block_linear, nf4_exact_weight
    from tuner.checkpoint.hf_config import build_model_from_hf_config

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_model_from_hf_config(hf_config, model_type).state_dict().items()}
    gen = torch.Generator(device).manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if len(shape) == 1:
            out[key] = torch.ones(shape, dtype=dtype)
        elif nf4_exact and is_block_linear(key, shape):
            out[key] = nf4_exact_weight(shape, gen, device).to(dtype).cpu()
        else:
            t = torch.empty(shape, device=device, dtype=torch.float32).normal_(0.0, 0.02, generator=gen)
            out[key] = t.to(dtype).cpu()
    return out


def write_hf_checkpoint(
    folder: str | Path,
    hf_config: Mapping[str, Any],
    model_type: str,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cpu",
    max_shard_size: int | str = "5GB",
    nf4_exact: bool = False,
) -> list[str]:
    """An HF model folder (config.json + safetensors, sharded with an index past ``max_shard_size``)
    from a tuner state dict (adapter weights are left out), or random-init dense weights of
    ``hf_config``'s shape when ``state_dict`` is None (``nf4_exact``: `_random_dense_state_dict`'s).
    Returns the weight file names, in order."""
    from tuner.checkpoint.hf_folder import saved_dtype, write_hf_config
    from tuner.checkpoint.hf_keys import tuner_to_hf
    from tuner.checkpoint.weights import save_sharded_safetensors
    from tuner.peft.utils import is_adapter_key

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if state_dict is None:
        state_dict = _random_dense_state_dict(hf_config, model_type, dtype, device, nf4_exact=nf4_exact)
    elif nf4_exact:
        raise ValueError("nf4_exact shapes random weights; a given state_dict is written as it is")
    base = {k: v for k, v in state_dict.items() if not is_adapter_key(k)}
    hf_sd = tuner_to_hf(base, model_type, hf_config)
    files = save_sharded_safetensors(hf_sd, folder, max_shard_size=max_shard_size)
    write_hf_config(dict(hf_config), folder, saved_dtype(hf_sd))
    return sorted(f for f in files if f.endswith(".safetensors"))


def write_tiktoken_ranks(path: str | Path, num_tokens: int = NUM_BASE_TOKENS, seed: int = 0) -> Path:
    """A llama3-style tiktoken ranks file (``base64(token) rank`` per line): the 256 single bytes,
    then distinct random lowercase strings of 2 to 5 letters, ``num_tokens`` in all."""
    rng = random.Random(seed)
    toks = [bytes([i]) for i in range(256)]
    seen = set(toks)
    while len(toks) < num_tokens:
        t = bytes(rng.randrange(97, 123) for _ in range(rng.randrange(2, 6)))
        if t not in seen:
            seen.add(t)
            toks.append(t)
    path = Path(path)
    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(toks)))
    return path


def _pools(words: Sequence[str], counts: Sequence[int]) -> dict[int, list[str]]:
    pools: dict[int, list[str]] = {}
    for w, c in zip(words, counts):
        pools.setdefault(c, []).append(w)
    return pools


def _pick(
    rng: random.Random, words: Sequence[str], count: Mapping[str, int], pools: Mapping[int, list[str]], left: int
) -> tuple[str, int]:
    """A word of ``c`` tokens with ``c == left`` or ``left - c >= 2`` (what is left stays reachable with
    words of 2 and 3 tokens): a random word when it fits, else one of the smallest count that fits."""
    for _ in range(4):
        w = rng.choice(words)
        if count[w] == left or left - count[w] >= 2:
            return w, count[w]
    c = min(c for c in pools if c == left or left - c >= 2)
    return rng.choice(pools[c]), c


def write_documents(path: str | Path, lengths: Sequence[int], tokenizer_path: str | Path, seed: int = 0) -> Path:
    r"""``[{"text": ...}, ...]`` whose i-th text encodes, with the BOS and EOS torchtune's
    text_completion_dataset adds, to exactly ``lengths[i]`` tokens of the ranks file ``tokenizer_path``
    (so ``lengths[i] - 2`` tokens of text; each length >= 2).

    A text is random lowercase words: the first bare, the others after one space. Each is a pre-token
    of the llama3 pattern (``[^\r\n\p{L}\p{N}]?\p{L}+``) and tiktoken's BPE works within pre-tokens,
    so a text's token count is the sum of its words' counts, which tuner's tiktoken reading of the
    same file (``llama3_tokenizer``) gives; the words are picked to make that sum exact, and every
    text is encoded again to check it. Deterministic for a given ``seed`` and ranks file."""
    from tuner.models.llama3 import llama3_tokenizer

    lengths = [int(n) for n in lengths]
    if any(n < 2 for n in lengths):
        raise TunerError(f"a document needs at least 2 tokens (BOS and EOS), got {min(lengths)}")
    tok = llama3_tokenizer(str(tokenizer_path))
    enc = tok.backend.enc
    rng = random.Random(seed)
    letters = [chr(c) for c in range(97, 123)]  # single bytes: one token bare, two after a space
    words = letters + ["".join(rng.choice(letters) for _ in range(rng.randrange(2, 9))) for _ in range(5000)]
    bare_counts = [len(ids) for ids in enc.encode_ordinary_batch(words)]
    spaced_counts = [len(ids) for ids in enc.encode_ordinary_batch([" " + w for w in words])]
    bare, spaced = dict(zip(words, bare_counts)), dict(zip(words, spaced_counts))
    bare_pools, spaced_pools = _pools(words, bare_counts), _pools(words, spaced_counts)
    if not ({1, 2} <= set(bare_pools) and {2, 3} <= set(spaced_pools)):
        raise TunerError(
            f"{tokenizer_path}: no words of 1 and 2 tokens, or of 2 and 3 after a space, to make texts of any length",
            "use the ranks file of write_tiktoken_ranks",
        )
    rows = []
    for n in lengths:
        left, parts = n - 2, []
        if left:
            w, c = _pick(rng, words, bare, bare_pools, left)
            parts.append(w)
            left -= c
        while left:
            w, c = _pick(rng, words, spaced, spaced_pools, left)
            parts.append(" " + w)
            left -= c
        rows.append({"text": "".join(parts)})
    for i, (row, n) in enumerate(zip(rows, lengths)):
        got = len(tok.encode(row["text"], add_bos=True, add_eos=True))
        if got != n:
            raise TunerError(f"document {i} encodes to {got} tokens, not {n}")
    path = Path(path)
    path.write_text(json.dumps(rows))
    return path


# ---- packed documents ----------------------------------------------------------------------------
def pack_documents(lengths: Sequence[int], max_seq_len: int) -> list[list[int]]:
    """The document lengths of each pack, as torchtune's ``PackedDataset(split_across_pack=False)``
    (and tuner's) packs documents in order: a document that does not fit in what is left of the pack
    starts the next one; the rest of a pack is padding."""
    packs: list[list[int]] = [[]]
    for n in lengths:
        if n > max_seq_len:
            raise ValueError(f"a document of {n} tokens does not fit a pack of {max_seq_len}")
        if sum(packs[-1]) + n > max_seq_len:
            packs.append([])
        packs[-1].append(n)
    return packs if packs[0] else []


def packed_document_lengths(seq_len: int, min_len: int | None, num_packs: int, seed: int = 0) -> list[int]:
    """Lengths (BOS and EOS included) of the documents torchtune packs for ``--packed``: the lengths of
    tuner's ``--packed`` documents (``synthetic_document_length``, in order), each kept within
    [2, seq_len - 1] (torchtune adds BOS and EOS, and its text dataset keeps at most
    ``tokenizer.max_seq_len - 1`` = seq_len - 1 tokens), as many as fill ``num_packs`` packs of
    ``seq_len``: torchtune builds every pack before training, so no more are written."""
    from benchmarks.components import synthetic_document_length

    if seq_len < 3:
        raise TunerError(f"--packed --compare-torchtune needs seq_len >= 3, got {seq_len}")
    lengths: list[int] = []
    used, packs, i = 0, 1, 0
    while True:
        n = min(max(synthetic_document_length(seq_len, min_len, i, seed), 2), seq_len - 1)
        if used + n > seq_len:
            if packs == num_packs:
                return lengths
            packs, used = packs + 1, 0
        lengths.append(n)
        used += n
        i += 1


def counted_tokens_per_step(packs: Sequence[Sequence[int]], batch_size: int) -> list[int]:
    """What torchtune counts as tokens in each step (``labels != -100``: the document tokens of the
    step's packs, not their padding), for batches of ``batch_size`` packs in order (``shuffle=False``;
    its dataloader drops the last, incomplete batch)."""
    return [sum(sum(p) for p in packs[k : k + batch_size]) for k in range(0, len(packs) - batch_size + 1, batch_size)]


def check_vocab_size(vocab_size: int) -> None:
    """Refuse a model whose vocabulary cannot hold every id torchtune's llama3 tokenizer emits."""
    if vocab_size < LLAMA3_VOCAB:
        raise UsageError(
            f"--compare-torchtune needs vocab_size >= {LLAMA3_VOCAB} (torchtune's llama3 tokenizer "
            f"emits ids up to {LLAMA3_VOCAB - 1}); this model has {vocab_size}",
            "drop the model.vocab_size override",
        )


@dataclass
class Assets:
    checkpoint_dir: Path
    checkpoint_files: list[str]
    tokenizer: Path
    data: Path  # a token file (`benchmarks.parity`) or, packed, a JSON of documents
    doc_lengths: list[int] | None = None  # packed: each document's tokens, BOS and EOS included
    adapters: Path | None = None  # LoRA: tuner's initial adapter weights, set in torchtune's model
    model_builder: str | None = None  # with adapters: torchtune's builder the model comes from

    @property
    def tokens(self) -> bool:
        """Whether ``data`` is a token file both tools read (loss parity), not documents."""
        return self.doc_lengths is None


def write_assets(
    folder: str | Path,
    hf_config: Mapping[str, Any],
    model_type: str,
    state_dict: Mapping[str, torch.Tensor] | None,
    device: str = "cpu",
    *,
    tokens: torch.Tensor | None = None,
    doc_lengths: Sequence[int] | None = None,
    nf4_exact: bool = False,
) -> Assets:
    """Checkpoint (``state_dict``, or random dense weights of ``hf_config``'s shape; ``nf4_exact``:
    see `write_hf_checkpoint`), tokenizer and data under ``folder``: ``tokens`` ([samples, seq_len]
    ids, both tools' batches) or, packed, one document of each of ``doc_lengths``."""
    from benchmarks.parity import write_token_file

    if (tokens is None) == (doc_lengths is None):
        raise ValueError("write_assets needs tokens or doc_lengths, not both")
    folder = Path(folder)
    if doc_lengths is not None:
        check_vocab_size(int(hf_config["vocab_size"]))
    files = write_hf_checkpoint(folder / "model", hf_config, model_type, state_dict, device=device, nf4_exact=nf4_exact)
    ranks = write_tiktoken_ranks(folder / "tokenizer.model")
    if tokens is not None:
        return Assets(folder / "model", files, ranks, write_token_file(folder / "tokens.safetensors", tokens))
    return Assets(
        folder / "model", files, ranks, write_documents(folder / "data.json", doc_lengths, ranks), list(doc_lengths)
    )


def parity_overrides(cfg: Mapping[str, Any]) -> list[str]:
    """torchtune overrides that give its run tuner's hyperparameters (``cfg``: tuner's final config):
    every key of the optimizer and of the lr scheduler (``tuner.`` paths renamed), gradient clipping,
    the optimizer in backward or not. With the same data, weights and dropout (0 in every shipped
    LoRA config) the two runs then differ only in their kernels."""
    out = []
    for node in ("optimizer", "lr_scheduler"):
        for key, value in (cfg.get(node) or {}).items():
            text = re.sub(r"^tuner\.", "torchtune.", str(value)) if key == "_component_" else _yaml_scalar(value)
            out.append(f"{node}.{key}={text}")
    out.append(f"clip_grad_norm={_yaml_scalar(cfg.get('clip_grad_norm'))}")
    out.append(f"optimizer_in_bwd={_yaml_scalar(bool(cfg.get('optimizer_in_bwd', False)))}")
    return out


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return "[" + ",".join(_yaml_scalar(v) for v in value) + "]"
    return str(value)


def benchmarks_on_path(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this checkout's root last on PYTHONPATH: torchtune's recipe imports
    ``benchmarks.parity`` (the token dataset, the adapter loading) from it; last, so that nothing
    of the checkout shadows torchtune's own packages (its ``recipes``)."""
    root = str(Path(__file__).resolve().parent.parent)
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (out.get("PYTHONPATH", ""), root) if p)
    return out


# ---- the command ---------------------------------------------------------------------------------
def forwarded_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of a tuner run that describe the workload's shape and precision (``model.*``,
    ``dtype``), with ``tuner.`` component paths renamed to ``torchtune.``; the rest (``compile``,
    memory options, ...) stay tuner's own."""
    out = []
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and (key.startswith("model.") or key == "dtype"):
            out.append(key + "=" + re.sub(r"^tuner\.", "torchtune.", value))
    return out


def torchtune_command(
    site: str | Path,
    workload: str,
    assets: Assets,
    out_dir: str | Path,
    *,
    seq_len: int,
    batch_size: int,
    steps: int,
    compile: bool,
    device: str = "cuda",
    packed: bool = False,
    seed: int = 0,
    overrides: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """argv running torchtune's recipe for ``workload`` on ``assets``: the shipped config with the
    same batch, sequence length, steps, seed and data order (``shuffle=False``) as tuner's run, no
    gradient accumulation; ``overrides`` go last.

    Unpacked, it reads the token file of ``assets`` (`benchmarks.parity.token_file_dataset`) and a
    LoRA model starts from the adapter weights of ``assets`` (`benchmarks.parity.torchtune_model_with_adapters`
    around ``assets.model_builder``, or around a forwarded ``model._component_``). Packed
    (``dataset.packed=True``), its PackedDataset packs into
    ``tokenizer.max_seq_len`` positions, so that is seq_len (documents keep at most seq_len - 1
    tokens, which `packed_document_lengths` respects); ``split_across_pack=False`` packs as tuner's
    ``--packed`` data does (a document that does not fit starts the next pack; the rest is padding)."""
    recipe, config = RECIPES[workload]
    site, out_dir = Path(site), Path(out_dir)
    argv = [
        python,
        str(site / "recipes" / f"{recipe}.py"),
        "--config",
        str(site / "recipes" / "configs" / f"{config}.yaml"),
        f"output_dir={out_dir}",
        f"checkpointer.checkpoint_dir={assets.checkpoint_dir}",
        f"checkpointer.checkpoint_files=[{','.join(assets.checkpoint_files)}]",
        f"tokenizer.path={assets.tokenizer}",
        *(_packed_data(assets, seq_len) if packed else _token_data(assets, seq_len)),
        f"batch_size={batch_size}",
        "gradient_accumulation_steps=1",
        "epochs=1",
        f"max_steps_per_epoch={steps}",
        "shuffle=False",
        f"seed={seed}",
        "log_every_n_steps=1",
        "log_peak_memory_stats=True",
        "metric_logger._component_=torchtune.training.metric_logging.DiskLogger",
        f"metric_logger.log_dir={out_dir / 'logs'}",
        "metric_logger.filename=log.txt",
        f"compile={compile}",
        f"device={device}",
    ]
    overrides = list(overrides)
    if recipe in LORA_RECIPES:
        argv.append("save_adapter_weights_only=True")  # the end-of-run save (untimed) skips a merged copy
        if assets.adapters is not None:  # torchtune's model starts from tuner's adapter init
            builder = assets.model_builder
            for o in overrides:  # a forwarded model._component_ is the builder the wrapper calls
                if o.startswith("model._component_="):
                    builder = o.partition("=")[2]
            overrides = [o for o in overrides if not o.startswith("model._component_=")]
            if builder is None:
                raise ValueError("assets with adapters need model_builder (torchtune's model component)")
            argv += [
                "model._component_=benchmarks.parity.torchtune_model_with_adapters",
                f"model.builder={builder}",
                f"model.adapter_file={assets.adapters}",
            ]
    return argv + overrides


def _token_data(assets: Assets, seq_len: int) -> list[str]:
    """The token file both tools read, in order (`benchmarks.parity.token_file_dataset`)."""
    if not assets.tokens:
        raise ValueError("an unpacked torchtune run reads a token file; these assets hold documents")
    return [
        f"tokenizer.max_seq_len={seq_len}",
        "dataset._component_=benchmarks.parity.token_file_dataset",
        f"dataset.path={assets.data}",
        "dataset.packed=False",
    ]


def _packed_data(assets: Assets, seq_len: int) -> list[str]:
    """torchtune's text dataset over the documents, packed by its PackedDataset into ``seq_len``."""
    return [
        f"tokenizer.max_seq_len={seq_len}",
        "dataset._component_=torchtune.datasets.text_completion_dataset",
        "dataset.source=json",
        f"dataset.data_files={assets.data}",
        "dataset.column=text",
        "dataset.split=train",
        "dataset.packed=True",
        "dataset.split_across_pack=False",
    ]


# ---- the log -------------------------------------------------------------------------------------
_INIT_MEM = re.compile(r"peak memory (allocation|reserved): ([0-9.]+) GiB")


COUNTED_UNPACKED = (
    "positions: torchtune counts labels != -100, which is every position of unpacked samples "
    "(batch_size x seq_len a step), as tuner counts"
)
COUNTED_PACKED = (
    "positions, padding included, as tuner counts: torchtune's own figure "
    "(tokens_per_s_median_logged) counts labels != -100, its packs' padding left out; "
    "each step's figure x batch_size*seq_len / its count of that step"
)


def summarize(
    rows: list[dict[str, float]],
    warmup: int,
    stdout: str = "",
    positions_per_step: int | None = None,
    counted_per_step: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Median tokens/s over steps after ``warmup``; peak memory over the step lines and the
    "Memory stats after model init" lines of the recipe's output (``stdout``).

    With ``counted_per_step`` (what torchtune counted in step 1, 2, ...: `counted_tokens_per_step`)
    and ``positions_per_step`` (batch_size x seq_len), each step's figure is converted to positions/s,
    tuner's count; torchtune's own median is kept as ``tokens_per_s_median_logged``."""
    logged = [
        (int(r["step"]), r["tokens_per_second_per_gpu"])
        for r in rows
        if r["step"] > warmup and "tokens_per_second_per_gpu" in r
    ]
    if not logged:
        raise ValueError(f"no step after warm-up {warmup} logged tokens_per_second_per_gpu ({len(rows)} step lines)")
    counts: dict[str, Any] = {"tokens_counted": COUNTED_UNPACKED}
    steady = [v for _, v in logged]
    if counted_per_step is not None:
        if positions_per_step is None:
            raise ValueError("counted_per_step needs positions_per_step")
        if max(s for s, _ in logged) > len(counted_per_step):
            raise ValueError(
                f"torchtune logged step {max(s for s, _ in logged)}; its data has {len(counted_per_step)} batches"
            )
        counted = [counted_per_step[s - 1] for s, _ in logged]
        steady = [v * positions_per_step / c for (_, v), c in zip(logged, counted)]
        counts = {
            "tokens_counted": COUNTED_PACKED,
            "tokens_per_s_median_logged": round(statistics.median(v for _, v in logged), 1),
            "padding_fraction": round(1 - sum(counted) / (positions_per_step * len(counted)), 4),
        }
    init = {"allocation": [], "reserved": []}
    for kind, value in _INIT_MEM.findall(stdout):
        init[kind].append(float(value))

    def peak(key: str, init_kind: str | None = None) -> float | None:
        values = [r[key] for r in rows if key in r] + (init[init_kind] if init_kind else [])
        return round(max(values), 2) if values else None

    return {
        "tokens_per_s_median": round(statistics.median(steady), 1),
        **counts,
        "peak_alloc_gib": peak("peak_memory_alloc", "allocation"),  # whole run, as tuner's figure
        "peak_reserved_gib": peak("peak_memory_reserved", "reserved"),
        "peak_alloc_train_gib": peak("peak_memory_alloc"),  # training steps only (the anchor figures' measure)
        "peak_reserved_train_gib": peak("peak_memory_reserved"),
        "steps_logged": len(rows),
        "losses": [r["loss"] for r in rows if "loss" in r],
        "first_loss": rows[0].get("loss"),
        "final_loss": rows[-1].get("loss"),
    }


# ---- running it ----------------------------------------------------------------------------------
def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_torchtune(
    argv: list[str],
    out_dir: str | Path,
    warmup: int,
    timeout: float,
    env: Mapping[str, str] | None = None,
    positions_per_step: int | None = None,
    counted_per_step: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run ``argv`` (from ``torchtune_command``) with a timeout and summarise its log (`summarize`,
    which the last two arguments go to). On a failure the entry has ``error``; the last lines of
    torchtune's output go to stderr and ``log_tail``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "torchtune_stdout.log"
    run_env = dict(env if env is not None else torchtune_env())
    run_env.setdefault("PYTHONUNBUFFERED", "1")
    run_env.setdefault("HF_HUB_OFFLINE", "1")
    run_env.setdefault("HF_DATASETS_OFFLINE", "1")
    run_env.setdefault("HF_DATASETS_CACHE", str(out_dir / "hf_datasets_cache"))
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            argv, stdout=f, stderr=subprocess.STDOUT, env=run_env, cwd=out_dir, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=timeout)
            error = None if rc == 0 else f"torchtune exited with code {rc}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the recipe and its compile workers
            rc = proc.wait()
            error = f"torchtune ran past the {timeout:.0f} s timeout"
    wall = round(time.perf_counter() - start, 1)
    stdout = log.read_text(errors="replace")
    rows = []
    for f in sorted((out_dir / "logs").glob("*.txt")):
        rows += parse_step_lines(f.read_text(errors="replace"))
    entry: dict[str, Any] = {"wall_s": wall, "log": str(log)}
    if error is None:
        try:
            entry.update(summarize(rows, warmup, stdout, positions_per_step, counted_per_step))
        except ValueError as e:
            error = str(e)
    if error is not None:
        tail = _tail(log)
        print(
            f"--- torchtune failed: {error}; last lines of {log}:\n{tail}\n--- end of torchtune output",
            file=sys.stderr,
            flush=True,
        )
        entry.update(error=error, rc=rc, steps_logged=len(rows), log_tail=tail.splitlines()[-15:])
    return entry
