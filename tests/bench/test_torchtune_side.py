"""scripts/benchmark.py --compare-torchtune, without torchtune: the inputs it writes for torchtune
(HF checkpoint, tiktoken ranks, text data), the command it runs, the parsing of torchtune's log, and
the one-line error when torchtune cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import torchtune_side as tt

SMALL = {
    "vocab_size": 300,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "embed_dim": 32,
    "intermediate_dim": 64,
    "max_seq_len": 64,
}


def _load_hf(folder: Path, files: list[str], model_type: str, tmp_path: Path) -> dict[str, torch.Tensor]:
    from tuner.checkpoint import HFCheckpointer

    return HFCheckpointer(folder, files, model_type, tmp_path / "unused_out").load_checkpoint()["model"]


def test_checkpoint_from_tuner_weights_loads_back_to_the_same_tensors(tmp_path):
    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.models.llama3_2 import lora_llama3_2

    torch.manual_seed(0)
    model = lora_llama3_2(
        ["q_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True, lora_rank=4, lora_alpha=8, **SMALL
    )
    state = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    config = hf_config_from_model(model, "LLAMA3_2")
    files = tt.write_hf_checkpoint(tmp_path / "m", config, "LLAMA3_2", state, max_shard_size="40KB")
    assert len(files) > 1 and (tmp_path / "m" / "model.safetensors.index.json").is_file()  # sharded like HF
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tie_word_embeddings"] is True
    loaded = _load_hf(tmp_path / "m", files, "LLAMA3_2", tmp_path)
    base = {k: v for k, v in state.items() if ".lora_" not in k}  # adapters are not part of the base checkpoint
    assert set(loaded) == set(base)
    for key, value in base.items():
        assert torch.equal(loaded[key], value), key


def test_random_dense_checkpoint_of_a_quantized_models_shape(tmp_path):
    from tuner.checkpoint.hf_config import hf_config_from_model
    from tuner.models.llama3_1 import llama3_1

    config = hf_config_from_model(llama3_1(**SMALL, tie_word_embeddings=False), "LLAMA3")
    files = tt.write_hf_checkpoint(tmp_path / "m", config, "LLAMA3", None, max_shard_size="60KB")
    loaded = _load_hf(tmp_path / "m", files, "LLAMA3", tmp_path)
    assert loaded["output.weight"].shape == (300, 32) and loaded["output.weight"].dtype == torch.bfloat16
    assert torch.equal(loaded["norm.scale"], torch.ones(32, dtype=torch.bfloat16))
    assert 0.015 < loaded["layers.0.mlp.w1.weight"].float().std().item() < 0.025


def test_tiktoken_file_is_a_llama3_ranks_file(tmp_path):
    from tuner.models.llama3 import llama3_tokenizer

    ranks = tt.write_tiktoken_ranks(tmp_path / "tokenizer.model")
    assert len(ranks.read_text().splitlines()) == tt.NUM_BASE_TOKENS == 128_000
    tok = llama3_tokenizer(str(ranks))
    assert tok.backend.num_base_tokens == 128_000 and tok.bos_id == 128_000


def test_command_runs_torchtunes_recipe_with_tuners_batch_and_steps(tmp_path):
    assets = tt.Assets(
        tmp_path / "model",
        ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
        tmp_path / "tokenizer.model",
        tmp_path / "tokens.safetensors",
        adapters=tmp_path / "adapters.safetensors",
        model_builder="torchtune.models.llama3_1.qlora_llama3_1_8b",
    )
    site = tmp_path / "site"
    argv = tt.torchtune_command(
        site,
        "qlora_8b",
        assets,
        tmp_path / "out",
        seq_len=2048,
        batch_size=2,
        steps=30,
        compile=True,
        overrides=["model.lora_rank=16"],
        python="python3",
    )
    assert argv[:4] == [
        "python3",
        str(site / "recipes" / "lora_finetune_single_device.py"),
        "--config",
        str(site / "recipes" / "configs" / "llama3_1" / "8B_qlora_single_device.yaml"),
    ]
    args = argv[4:]
    for expected in [
        "compile=True",
        "batch_size=2",
        "max_steps_per_epoch=30",
        "gradient_accumulation_steps=1",
        "tokenizer.max_seq_len=2048",
        "dataset._component_=benchmarks.parity.token_file_dataset",  # tuner's batches, in tuner's order
        f"dataset.path={tmp_path / 'tokens.safetensors'}",
        "model._component_=benchmarks.parity.torchtune_model_with_adapters",  # tuner's initial adapters
        "model.builder=torchtune.models.llama3_1.qlora_llama3_1_8b",
        f"model.adapter_file={tmp_path / 'adapters.safetensors'}",
        "device=cuda",
        "checkpointer.checkpoint_files=[model-00001-of-00002.safetensors,model-00002-of-00002.safetensors]",
        f"checkpointer.checkpoint_dir={tmp_path / 'model'}",
        f"metric_logger.log_dir={tmp_path / 'out' / 'logs'}",
        "save_adapter_weights_only=True",
        "seed=0",
        "shuffle=False",
        "dataset.packed=False",
    ]:
        assert expected in args, expected
    assert args[-1] == "model.lora_rank=16"  # overrides come last, so they win

    full = tt.torchtune_command(
        site, "full_1b", assets, tmp_path / "out", seq_len=512, batch_size=4, steps=5, compile=False, device="cpu"
    )
    assert full[1].endswith("recipes/full_finetune_single_device.py") and full[3].endswith(
        "llama3_2/1B_full_single_device.yaml"
    )
    assert "compile=False" in full and "device=cpu" in full and "save_adapter_weights_only=True" not in full
    assert not any(a.startswith("model.") for a in full)  # no adapters: torchtune's own model component

    # a forwarded model component is the builder torchtune's model is made by, around tuner's adapters
    small = tt.torchtune_command(
        site,
        "lora_1b",
        assets,
        tmp_path / "out",
        seq_len=32,
        batch_size=2,
        steps=3,
        compile=False,
        seed=1,
        overrides=["model._component_=torchtune.models.llama3_2.lora_llama3_2", "model.num_layers=2"],
    )
    assert "model.builder=torchtune.models.llama3_2.lora_llama3_2" in small and "seed=1" in small
    assert "model._component_=benchmarks.parity.torchtune_model_with_adapters" in small
    assert not any(a == "model._component_=torchtune.models.llama3_2.lora_llama3_2" for a in small)

    assert tt.forwarded_overrides(
        [
            "model._component_=tuner.models.llama3_2.lora_llama3_2",
            "model.num_layers=2",
            "dtype=fp32",
            "compile=True",
            "enable_activation_checkpointing=False",
        ]
    ) == ["model._component_=torchtune.models.llama3_2.lora_llama3_2", "model.num_layers=2", "dtype=fp32"]


# DiskLogger lines as torchtune 0.6.1 writes them: a CPU run of lora_finetune_single_device, and the
# memory keys that `training.get_memory_stats` adds on CUDA (values as the recipe logs them).
CPU_LOG = """\
Step 1 | loss:65.30281066894531 lr:2.9999999999999997e-06 tokens_per_second_per_gpu:454.1652526855469 
Step 2 | loss:63.43115997314453 lr:5.999999999999999e-06 tokens_per_second_per_gpu:697.7056274414062 
Step 3 | loss:63.12710189819336 lr:8.999999999999999e-06 tokens_per_second_per_gpu:635.2826538085938 
Step 4 | loss:64.30298614501953 lr:1.1999999999999999e-05 tokens_per_second_per_gpu:86.2060317993164 
"""
CUDA_LOG = """\
Step 1 | loss:11.9 lr:3e-06 tokens_per_second_per_gpu:tensor(1200.5, device='cuda:0') peak_memory_active:15.1 peak_memory_alloc:15.0 peak_memory_reserved:15.5 
Step 2 | loss:11.8 lr:6e-06 tokens_per_second_per_gpu:63000.25 peak_memory_active:14.2 peak_memory_alloc:14.1 peak_memory_reserved:15.5 
Step 3 | loss:11.7 lr:9e-06 tokens_per_second_per_gpu:63200.75 peak_memory_active:14.2 peak_memory_alloc:14.1 peak_memory_reserved:15.5 
"""
INIT_LINES = (
    "INFO:torchtune.utils._logging:Memory stats after model init:\n\tGPU peak memory allocation: 2.46 GiB\n"
    "\tGPU peak memory reserved: 16.02 GiB\n\tGPU peak memory active: 2.46 GiB\n"
)


def test_log_parser_reads_torchtunes_disk_logger_lines():
    rows = tt.parse_step_lines("Writing logs to x\n" + CPU_LOG)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["tokens_per_second_per_gpu"] == pytest.approx(454.1652526855469)
    assert rows[1]["lr"] == pytest.approx(6e-06)
    cpu = tt.summarize(rows, warmup=1)
    assert cpu["tokens_per_s_median"] == 635.3 and cpu["peak_alloc_gib"] is None and cpu["steps_logged"] == 4
    assert cpu["first_loss"] == pytest.approx(65.30281066894531) and cpu["final_loss"] == pytest.approx(
        64.30298614501953
    )

    rows = tt.parse_step_lines(CUDA_LOG)
    assert rows[0]["tokens_per_second_per_gpu"] == 1200.5  # printed as a tensor
    cuda = tt.summarize(rows, warmup=1, stdout=INIT_LINES)
    assert cuda["tokens_per_s_median"] == 63100.5  # steps 2 and 3
    assert (cuda["peak_alloc_train_gib"], cuda["peak_reserved_train_gib"]) == (15.0, 15.5)
    assert (cuda["peak_alloc_gib"], cuda["peak_reserved_gib"]) == (15.0, 16.02)  # model init included
    with pytest.raises(ValueError, match="no step after warm-up 5"):
        tt.summarize(rows, warmup=5)


def _fake_torchtune(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "fake_site" / "torchtune"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torchao'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(pkg.parent))
    monkeypatch.delenv(tt.PATH_VARIABLE, raising=False)


def test_missing_torchtune_is_one_clear_error(tmp_path, monkeypatch):
    _fake_torchtune(tmp_path, monkeypatch)
    with pytest.raises(tt.TorchtuneUnavailable) as err:
        tt.find_torchtune()
    message = str(err.value)
    assert "torchtune is not importable" in message and "No module named 'torchao'" in message
    assert "scripts/device_setup.sh" in message and "Traceback" not in message


# A tiny CPU comparison run; each test adds what must stop it before anything trains.
COMPARE = ["--workload", "lora_1b", "--device", "cpu", "--compare-torchtune", "--steps", "2", "--warmup", "1"]
COMPARE += ["--seq-len", "16", "--batch-size", "1"]


def refused_before_training(bench, capsys, *extra: str) -> tuple[int, str]:
    """Run the comparison with ``extra`` arguments; nothing trained (no JSON) and one stderr line: (exit code, line)."""
    code = bench.main([*COMPARE, *extra])
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, lines
    return code, lines[0]


def test_benchmark_stops_before_training_when_torchtune_is_missing(tmp_path, monkeypatch, capsys, bench):
    _fake_torchtune(tmp_path, monkeypatch)
    code, line = refused_before_training(bench, capsys)
    assert code != 0 and line.startswith("error: --compare-torchtune: torchtune is not importable")


def test_packed_comparison_refuses_overrides_that_reorder_torchtunes_packs(capsys, bench):
    code, line = refused_before_training(bench, capsys, "--packed", "--torchtune-override", "shuffle=True")
    assert code == 2
    assert "sets torchtune's shuffle itself" in line and "drop --torchtune-override shuffle=..." in line


def test_a_vocabulary_smaller_than_llama3s_is_refused_before_training(capsys, bench):
    code, line = refused_before_training(
        bench, capsys, "--packed", "model.vocab_size=1000"
    )  # packed: torchtune tokenizes the documents itself (unpacked, it reads tuner's token ids)
    assert code == 2
    assert "needs vocab_size >= 128256" in line and "this model has 1000" in line
    assert "drop the model.vocab_size override" in line


def test_torchtunes_path_is_for_the_subprocess_alone():
    env = tt.torchtune_env(None, base={"PYTHONPATH": "/tmp/site", tt.PATH_VARIABLE: "/tmp/site_tt", "X": "1"})
    assert env["PYTHONPATH"] == "/tmp/site_tt:/tmp/site" and env["X"] == "1"
    assert tt.torchtune_env("/opt/tt", base={})["PYTHONPATH"] == "/opt/tt"
    assert "PYTHONPATH" not in tt.torchtune_env(None, base={})


# ---- --packed --compare-torchtune ----------------------------------------------------------------
@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> Path:
    return tt.write_tiktoken_ranks(tmp_path_factory.mktemp("ranks") / "tokenizer.model")


def test_documents_encode_to_exactly_the_lengths_asked(tmp_path, ranks):
    from tuner.models.llama3 import llama3_tokenizer

    lengths = [2, 3, 4, 5, 6, 63, 2047] + tt.packed_document_lengths(64, 8, num_packs=6)
    data = tt.write_documents(tmp_path / "data.json", lengths, ranks)
    rows = json.loads(data.read_text())
    tok = llama3_tokenizer(str(ranks))
    # torchtune's text_completion_dataset: encode(text, add_bos=True, add_eos=True), then truncation
    assert [len(tok.encode(r["text"], add_bos=True, add_eos=True)) for r in rows] == lengths
    assert len({r["text"] for r in rows[7:]}) == len(rows) - 7  # random words, not one text repeated
    assert tt.write_documents(tmp_path / "again.json", lengths, ranks).read_text() == data.read_text()  # seeded


def test_packed_documents_make_tuners_packs(bench):
    from benchmarks import NullTokenizer, synthetic_dataset

    seq_len, batch, steps = 64, 2, 3
    lengths = tt.packed_document_lengths(seq_len, seq_len // 8, num_packs=batch * (steps + 2))
    assert all(2 <= n <= seq_len - 1 for n in lengths)  # torchtune keeps max_seq_len - 1 = seq_len - 1 tokens
    packs = tt.pack_documents(lengths, seq_len)
    assert len(packs) == batch * (steps + 2) and all(sum(p) <= seq_len for p in packs)
    # tuner's --packed data (run() doubles num_samples) packs documents of the same lengths the same way
    ours = synthetic_dataset(
        NullTokenizer(),
        seq_len=seq_len,
        num_samples=2 * batch * (steps + 1),
        vocab_size=100,
        packed=True,
        min_len=seq_len // 8,
    )
    for i in range(batch * steps):  # tuner's seq_lens: the documents, then the padding if any
        docs = ours[i]["seq_lens"].tolist()
        assert [min(n, seq_len - 1) for n in docs[: len(packs[i])]] == packs[i], i  # a 64-token document has 63 here
        assert len(docs) - len(packs[i]) == (sum(docs[: len(packs[i])]) < seq_len), i
    # what torchtune counts a step: the documents' tokens of its `batch` packs, not their padding
    assert tt.counted_tokens_per_step([[61], [15, 20, 21], [51], [55, 9], [10]], 2) == [117, 115]


def test_packed_command_packs_into_seq_len(tmp_path):
    assets = tt.Assets(tmp_path / "model", ["model.safetensors"], tmp_path / "tokenizer.model", tmp_path / "data.json")
    argv = tt.torchtune_command(
        tmp_path / "site",
        "lora_1b",
        assets,
        tmp_path / "out",
        seq_len=2048,
        batch_size=4,
        steps=25,
        compile=True,
        packed=True,
    )
    for expected in [
        "tokenizer.max_seq_len=2048",
        "dataset.packed=True",
        "dataset.split_across_pack=False",
        "shuffle=False",
        "dataset._component_=torchtune.datasets.text_completion_dataset",
    ]:
        assert expected in argv, expected
    assert "dataset.packed=False" not in argv and "tokenizer.max_seq_len=2049" not in argv


def test_packed_tokens_per_s_is_converted_to_positions():
    log = "".join(
        f"Step {s} | loss:1.0 lr:1e-05 tokens_per_second_per_gpu:{v} \n"
        for s, v in [(1, 10.0), (2, 90.0), (3, 100.0), (4, 60.0)]
    )
    rows = tt.parse_step_lines(log)
    # 2 packs of 64 positions a step; torchtune counted only the non-padding labels of each step
    packed = tt.summarize(rows, warmup=1, positions_per_step=128, counted_per_step=[128, 96, 100, 64])
    assert packed["tokens_per_s_median_logged"] == 90.0  # torchtune's own figure (steps 2..4)
    assert packed["tokens_per_s_median"] == 120.0  # median of 90*128/96, 100*128/100, 60*128/64
    assert packed["tokens_counted"] == tt.COUNTED_PACKED
    assert packed["padding_fraction"] == round(1 - 260 / 384, 4)
    unpacked = tt.summarize(rows, warmup=1)
    assert unpacked["tokens_per_s_median"] == 90.0 and unpacked["tokens_counted"] == tt.COUNTED_UNPACKED
    assert "tokens_per_s_median_logged" not in unpacked
    with pytest.raises(ValueError, match="data has 3 batches"):
        tt.summarize(rows, warmup=1, positions_per_step=128, counted_per_step=[128, 96, 100])


_TT_PACKS = """\
import json, sys
from torchtune.datasets import text_completion_dataset
from torchtune.models.llama3 import llama3_tokenizer
data, ranks, max_seq_len, split = sys.argv[1:]
ds = text_completion_dataset(llama3_tokenizer(ranks, max_seq_len=int(max_seq_len)), source="json", data_files=data,
                             column="text", split="train", packed=True, split_across_pack=split == "True")
print(json.dumps([[len(p["tokens"]), p["seq_lens"].tolist(), int((p["labels"] != -100).sum())] for p in ds.packs]))
"""


@pytest.mark.skipif(not os.environ.get(tt.PATH_VARIABLE), reason=f"torchtune: set ${tt.PATH_VARIABLE}")
def test_torchtunes_packed_dataset_builds_the_expected_packs(tmp_path, ranks):
    seq_len = 64
    lengths = tt.packed_document_lengths(seq_len, seq_len // 8, num_packs=8)
    assets = tt.Assets(tmp_path, [], ranks, tt.write_documents(tmp_path / "data.json", lengths, ranks), lengths)
    argv = tt.torchtune_command(
        tmp_path,
        "lora_1b",
        assets,
        tmp_path / "out",
        seq_len=seq_len,
        batch_size=2,
        steps=3,
        compile=False,
        packed=True,
    )
    values = dict(a.split("=", 1) for a in argv[4:])
    env = {
        **tt.torchtune_env(),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "cache"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _TT_PACKS,
            str(assets.data),
            str(ranks),
            values["tokenizer.max_seq_len"],
            values["dataset.split_across_pack"],
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    packs = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = tt.pack_documents(lengths, seq_len)
    assert [n for n, _, _ in packs] == [seq_len] * len(expected)  # every pack: seq_len positions
    assert [lens[: len(e)] for (_, lens, _), e in zip(packs, expected)] == expected  # then one padding "document"
    assert [c for _, _, c in packs] == [sum(e) for e in expected]  # what the recipe counts as tokens
