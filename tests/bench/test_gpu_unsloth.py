"""scripts/gpu_unsloth.py on CPU: the model folder unsloth would load, the LoRA read off tuner's
configs, the probe JSON (a stand-in runner for unsloth, which needs a GPU), the longest-context
search over stand-in probe processes, the two-group install and the one-line errors."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks import max_context as mc
from tests.bench.conftest import load_script
from tests.bench.test_max_context import TINY_QLORA as TINY


@pytest.fixture(scope="module")
def gu():
    return load_script("gpu_unsloth")


@pytest.fixture(scope="module")
def tiny_model(gu, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("unsloth_model")
    gu.prepare(str(folder), gu.LONG_CONTEXT_CONFIG, TINY, device="cpu")
    return folder


def test_the_model_folder_loads_in_transformers_with_a_tokenizer_of_the_models_vocabulary(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64 and model.dtype == torch.bfloat16
    assert model.config.rope_scaling["rope_type"] == "llama3"  # Llama 3.1's, as the tuner config builds
    assert len(tok) == model.config.vocab_size == 512
    assert tok.convert_ids_to_tokens([256, 265]) == ["<|begin_of_text|>", "<|eot_id|>"]  # the last 256 ids
    assert (model.config.bos_token_id, model.config.eos_token_id, tok.pad_token) == (
        256,
        265,
        "<|finetune_right_pad_id|>",
    )
    assert tok("t5 t7 <|eot_id|>").input_ids == [5, 7, 265]
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 512)


def test_the_lora_is_read_off_tuners_configs_in_hf_module_names(gu):
    long = gu.lora_setup("llama3_1/8B_qlora_long_context")  # unsloth's published setup: r32, every linear layer
    assert (long.rank, long.alpha) == (32, 32.0)
    assert long.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]
    speed = gu.lora_setup("llama3_1/8B_qlora_single_device")  # tuner's qlora_8b workload
    assert (speed.rank, speed.alpha, speed.lr, speed.weight_decay) == (8, 16.0, 3e-4, 0.01)
    assert speed.target_modules == ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]


def test_a_probe_reports_tuners_benchmark_fields(gu, tiny_model, capsys):
    seen = {}

    def runner(model_dir, lora, seq_len, batch_size, steps, device):
        print("Unsloth: a banner")  # unsloth prints to stdout; the probe's stdout stays one JSON line
        seen.update(model_dir=model_dir, rank=lora.rank, seq_len=seq_len, batch=batch_size, steps=steps, device=device)
        return {"step_s": [4.0, 2.0, 1.0, 0.5], "losses": [6.3, 6.2, 6.1, 6.0], "setup_alloc_bytes": 3 * 2**30}

    argv = ["probe", "--model-dir", str(tiny_model), "--config", "llama3_1/8B_qlora_single_device"]
    argv += ["--seq-len", "2048", "--batch-size", "2", "--steps", "4", "--warmup", "1", "--device", "cpu"]
    assert gu.main(argv, runner=runner) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    result = json.loads(out[0])
    assert seen == {"model_dir": str(tiny_model), "rank": 8, "seq_len": 2048, "batch": 2, "steps": 4, "device": "cpu"}
    assert result["tokens_per_s_steps"] == [1024, 2048, 4096, 8192]
    assert result["tokens_per_s_median"] == 4096.0  # median of the three steps after the warm-up
    assert (result["first_loss"], result["final_loss"], result["setup_alloc_gib"]) == (6.3, 6.0, 3.0)
    assert result["lora"]["target_modules"][:3] == ["q_proj", "v_proj", "o_proj"]
    assert result["host_peak_rss_gib"] > 0 and result["peak_alloc_gib"] is None  # no GPU here
    probe = mc.read_probe(2048, 0, json.dumps(result), 1.0)  # the search reads it as tuner's probes
    assert probe.fits and probe.tokens_per_s == 4096.0 and probe.host_peak_rss_gib == result["host_peak_rss_gib"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["probe", "--model-dir", "/nonexistent/model"], "no model folder at /nonexistent/model"),
        (["probe", "--steps", "2", "--warmup", "2"], "--steps 2 --warmup 2"),
        (["probe", "--device", "cpu", "--memory-cap-gib", "16", "--model-dir", "."], "caps GPU memory"),
        (["max-context", "16,x"], "are not numbers"),
        (["max-context", "16", "--context-range", "8192:4096"], "--context-range 8192:4096"),
        (["install", "/nonexistent/b", "--target", "/nonexistent/site", "--after", "a"], "group a is not installed"),
    ],
)
def test_bad_input_is_one_error_line(gu, argv, message, capsys):
    code = gu.main(argv, runner=lambda *a: pytest.fail("must not run"), command=lambda *a: pytest.fail("no probe"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0] and "Fix:" in err[0]


def test_without_unsloth_the_probe_says_so_in_one_line(gu, tiny_model, capsys, monkeypatch):
    """unsloth is not in the dev environment (it needs a GPU to import at all)."""
    for key, value in gu.OFFLINE_ENV.items():  # set by the probe; restored for the tests after this one
        monkeypatch.setenv(key, value)
    assert gu.main(["probe", "--model-dir", str(tiny_model), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unsloth cannot be imported here (ModuleNotFoundError")
    assert "install .whl_unsloth/b --after a" in err[0]


FAKE_PROBE = """
import json, sys
seq_len, limit = int(sys.argv[1]), int(sys.argv[2])
if seq_len > limit:
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
print(json.dumps({"tokens_per_s_median": 1000.0, "peak_alloc_gib": seq_len / 8192, "peak_reserved_gib": 1.0,
                  "host_peak_rss_gib": 2.0}))
"""


def test_the_longest_context_search_runs_unsloths_probes_through_tuners_harness(gu, capsys):
    calls = []

    def command(model_dir, config, seq_len, cap, steps):
        calls.append((model_dir, config, seq_len, cap, steps))
        return [sys.executable, "-c", FAKE_PROBE, str(seq_len), str(int(cap * 4096))]  # 16 GiB -> 65,536

    argv = ["max-context", "16", "--model-dir", "/m", "--context-range", "4096:98304", "--steps", "1"]
    assert gu.main(argv, command=command) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entry = result["caps_gib"]["16"]
    assert calls[0] == ("/m", gu.LONG_CONTEXT_CONFIG, 61_440, 16.0, 1)  # the goal (61,086) rounded up, first
    assert (entry["longest"], entry["first_failing"], entry["complete"]) == (65_536, 69_632, True)
    assert entry["goal_met"] is True and entry["unsloth_tokens"] == 40_724 and entry["best"]["peak_alloc_gib"] == 8.0
    assert result["tool"] == "unsloth" and all(p["fits"] is not None for p in entry["probes"])


def test_the_probe_command_is_a_fresh_process_of_this_script_at_batch_one(gu):
    argv = gu.probe_command("/m", "llama3_1/8B_qlora_long_context", 8192, 16.0, 2)
    assert argv[1].endswith("gpu_unsloth.py") and argv[2] == "probe"
    flags = dict(zip(argv[3::2], argv[4::2]))
    assert flags == {
        "--model-dir": "/m",
        "--config": "llama3_1/8B_qlora_long_context",
        "--seq-len": "8192",
        "--batch-size": "1",
        "--steps": "2",
        "--warmup": "1",
        "--memory-cap-gib": "16.0",
    }


def _installable_wheel(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 1\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in {**files, f"{info}/RECORD": record}.items():
            zf.writestr(n, text)
    return path


def test_two_groups_install_into_one_target_the_second_after_the_first(gu, tmp_path, capsys):
    site = tmp_path / "site"
    _installable_wheel(tmp_path / "a", "carried_a")
    _installable_wheel(tmp_path / "b", "carried_b")
    assert gu.main(["install", str(tmp_path / "b"), "--target", str(site), "--after", "a"]) == 2  # a first
    assert "group a is not installed" in capsys.readouterr().err
    assert gu.main(["install", str(tmp_path / "a"), "--target", str(site)]) == 0
    assert gu.main(["install", str(tmp_path / "b"), "--target", str(site), "--after", "a"]) == 0
    assert (site / "carried_a" / "__init__.py").is_file() and (site / "carried_b" / "__init__.py").is_file()
    assert (site / ".installed_a").is_file() and (site / ".installed_b").is_file()


def test_the_8b_folder_describes_llama_3_1_8b_and_its_tokenizer_has_all_128256_ids(gu, tmp_path):
    """What `prepare` writes on the GPU machine, but the weights (16 GB): the config and the tokenizer."""
    from transformers import AutoTokenizer

    config = gu.hf_config_of(gu.LONG_CONTEXT_CONFIG, [])
    expected = {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    }
    assert {k: config[k] for k in expected} == expected
    assert config["rope_scaling"]["rope_type"] == "llama3" and config["rope_scaling"]["factor"] == 8.0
    gu.write_tokenizer(tmp_path, 128256)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(tok) == 128256
    assert tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|finetune_right_pad_id|>", "<|eot_id|>"]) == [
        128000,
        128004,
        128009,
    ]
