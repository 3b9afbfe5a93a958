"""`tune run generate` on a tiny SmolLM2-shaped model with the real SmolLM2 tokenizer: greedy
tokens equal transformers', adapters switched over one base equal each merged model (PEFT's
merge_and_unload), a short LoRA run's learned answer format shows and stops at end-of-turn,
sampling is reproducible, the chat loop keeps history, and bad inputs give clear errors."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.real_data import smollm2_chat_template
from tests.recipes.helpers import (
    checkpointer_node,
    model_node,
    tiny_checkpoint_fixture,
    train_in_process,
    tune_in_process,
)
from tuner.errors import CheckpointError, ConfigError, UsageError
from tuner.generation.runner import GenerationRun

PROMPTS = ["Name a colour of the sky.", {"system": "Answer in one word.", "user": "What do bees make?"}]


# a larger init scale gives varied greedy tokens (not one repeated token) from random weights
ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


def gen_cfg(ckpt: Path, **overrides) -> dict:
    cfg = {
        "model": model_node(),
        "tokenizer": {"_component_": "tuner.models.smollm2.smollm2_tokenizer", "path": str(ckpt / "tokenizer.json")},
        "checkpointer": checkpointer_node(ckpt),
        "device": "cpu",
        "dtype": "fp32",
        "max_new_tokens": 10,
        "seed": 0,
    }
    cfg.update(overrides)
    return cfg


def run_inprocess(cfg: dict, stdin: str = "") -> tuple[list, str]:
    out = io.StringIO()
    results = GenerationRun(OmegaConf.create(cfg), stdin=io.StringIO(stdin), stdout=out, stderr=io.StringIO()).run()
    return results, out.getvalue()


def hf_greedy(model, prompt: list[int], n: int, stops: list[int]) -> list[int]:
    from transformers import GenerationConfig

    ids = torch.tensor([prompt])
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        generation_config=GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=stops, pad_token_id=0),
    )
    return out[0, len(prompt) :].tolist()


def hf_model(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def stop_ids(ckpt: Path) -> list[int]:
    from tuner.models.smollm2 import smollm2_tokenizer

    return smollm2_tokenizer(str(ckpt / "tokenizer.json")).stop_tokens


def test_recipe_greedy_equals_transformers(ckpt, tmp_path):
    from transformers import AutoTokenizer

    out_file = tmp_path / "out.jsonl"
    cfg_path = tmp_path / "gen.yaml"
    cfg_path.write_text(json.dumps(gen_cfg(ckpt, prompt=PROMPTS, output_file=str(out_file))))
    proc = tune_in_process("run", "generate", "--config", str(cfg_path))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == 2
    hf_tok = AutoTokenizer.from_pretrained(ckpt)
    hf_tok.chat_template = smollm2_chat_template()
    expected_prompts = [
        [{"role": "user", "content": PROMPTS[0]}],
        [{"role": "system", "content": PROMPTS[1]["system"]}, {"role": "user", "content": PROMPTS[1]["user"]}],
    ]
    model = hf_model(ckpt)
    stops = stop_ids(ckpt)
    for row, msgs in zip(rows, expected_prompts):
        ids = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert row["prompt_tokens"] == list(ids)
        expected = hf_greedy(model, row["prompt_tokens"], 10, stops)
        assert row["tokens"] == expected
        assert len(set(expected)) > 1  # a meaningful comparison, not one repeated token
        text = hf_tok.decode(expected, skip_special_tokens=True)
        assert row["text"] == text
        assert text in proc.stdout  # streamed to the terminal
    assert "tokens/s" in proc.stderr


def test_plain_text_prompt_and_sampling(ckpt):
    (greedy,), streamed = run_inprocess(gen_cfg(ckpt, prompt="The weather today is", chat_format=False))
    from tuner.models.smollm2 import smollm2_tokenizer

    tok = smollm2_tokenizer(str(ckpt / "tokenizer.json"))
    assert greedy.prompt_tokens == tok.encode("The weather today is", add_bos=True, add_eos=False)
    assert greedy.tokens == hf_greedy(hf_model(ckpt), greedy.prompt_tokens, 10, tok.stop_tokens)
    assert streamed.strip() == greedy.text.strip()

    sample = dict(
        prompt="The weather today is", chat_format=False, temperature=1.0, top_k=50, top_p=0.95, max_new_tokens=12
    )
    a, _ = run_inprocess(gen_cfg(ckpt, seed=7, **sample))
    b, _ = run_inprocess(gen_cfg(ckpt, seed=7, **sample))
    c, _ = run_inprocess(gen_cfg(ckpt, seed=8, **sample))
    assert a[0].tokens == b[0].tokens
    assert a[0].tokens != c[0].tokens


def _peft_adapter(ckpt: Path, folder: Path, seed: int, **lora) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(hf_model(ckpt), LoraConfig(init_lora_weights=False, **lora))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def two_adapters(ckpt, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "terse": _peft_adapter(ckpt, root / "terse", 1, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        "wordy": _peft_adapter(
            ckpt,
            root / "wordy",
            2,
            r=8,
            lora_alpha=4,
            use_rslora=True,
            use_dora=True,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    }


def test_adapter_switching_equals_each_merged_model(ckpt, two_adapters):
    from peft import PeftModel

    prompt = "Tell me about rivers."
    order = ["terse", "wordy", "base", "terse", "wordy"]
    results, _ = run_inprocess(
        gen_cfg(
            ckpt,
            adapters={k: str(v) for k, v in two_adapters.items()},
            prompt=[{"user": prompt, "adapter": name} for name in order],
            max_new_tokens=8,
        )
    )
    stops = stop_ids(ckpt)
    expected = {"base": hf_greedy(hf_model(ckpt), results[0].prompt_tokens, 8, stops)}
    for name, folder in two_adapters.items():
        merged = PeftModel.from_pretrained(hf_model(ckpt), folder).merge_and_unload().eval()
        expected[name] = hf_greedy(merged, results[0].prompt_tokens, 8, stops)
    assert len({tuple(v) for v in expected.values()}) == 3  # the adapters change the answer
    for name, result in zip(order, results):
        assert result.tokens == expected[name], name
        assert result.adapter == (None if name == "base" else name)


def test_batched_prompts_with_their_adapters_equal_one_at_a_time(ckpt, two_adapters, capsys):
    """batch_size: 3 answers 4 prompts (of different lengths, over two adapters and the base) in two
    batches over the unmerged base; every answer equals the one-at-a-time (merged) answer."""
    adapters = {k: str(v) for k, v in two_adapters.items()}
    prompts = [
        {"user": "Tell me about rivers.", "adapter": "wordy"},
        {"user": "Hi", "adapter": "base"},
        {"user": "Name three animals that live in the sea, please.", "adapter": "terse"},
        {"user": "Why?"},  # the default adapter
    ]
    cfg = gen_cfg(ckpt, adapters=adapters, adapter="terse", prompt=prompts, max_new_tokens=8)
    alone, _ = run_inprocess(cfg)
    batched, streamed = run_inprocess({**cfg, "batch_size": 3})
    assert [r.adapter for r in batched] == ["wordy", None, "terse", "terse"]
    assert [r.extra["batch_size"] for r in batched] == [3, 3, 3, 1]
    assert [r.tokens for r in batched] == [r.tokens for r in alone]
    assert [r.text for r in batched] == [r.text for r in alone] and all(r.text.strip() in streamed for r in batched)
    assert len({tuple(r.tokens) for r in batched[:3]}) == 3

    from tuner.errors import run_reporting_errors

    bad = {**cfg, "batch_size": 3, "prompt": [{"user": "hi", "adapter": "wordyy"}]}
    assert run_reporting_errors(lambda: run_inprocess(bad)) == 2
    err = capsys.readouterr().err
    assert "error: unknown adapter 'wordyy'" in err and "did you mean 'wordy'" in err and "Traceback" not in err
    assert run_reporting_errors(lambda: run_inprocess({**bad, "adapters": None})) == 2
    assert "no adapters are loaded" in capsys.readouterr().err
    with pytest.raises(UsageError, match="a prompt has .* tokens, the model's max_seq_len is 512"):
        run_inprocess({**cfg, "batch_size": 2, "prompt": ["hi", "word " * 600]})


@pytest.fixture(scope="module")
def ok_run(ckpt, tmp_path_factory) -> Path:
    """A 32-step LoRA run on CPU where every answer is exactly "OK"; returns its last step folder."""
    root = tmp_path_factory.mktemp("ok_run")
    rng = random.Random(0)
    words = "river apple cloud stone tiger piano garden rocket winter candle ocean bread honey magic".split()
    rows = [
        {
            "input": f"{rng.choice(['Tell me about', 'Describe', 'What is', 'Explain'])} {rng.choice(words)} "
            f"{rng.choice(words)}?",
            "output": "OK",
        }
        for _ in range(64)
    ]
    (root / "ok.json").write_text(json.dumps(rows))
    lora = {
        "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
        "apply_lora_to_mlp": True,
        "lora_rank": 8,
        "lora_alpha": 16,
    }
    dataset = {
        "_component_": "tuner.datasets.instruct_dataset",
        "source": "json",
        "data_files": str(root / "ok.json"),
        "split": "train",
    }
    run = dict(batch_size=4, max_steps_per_epoch=16, epochs=2, shuffle=True)
    run["optimizer"] = {"_component_": "torch.optim.AdamW", "lr": 2e-2}
    train_in_process(root / "train.yaml", ckpt, root / "out", lora=lora, dataset=dataset, **run)
    return max((root / "out").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))


def test_learned_format_and_stop_at_end_of_turn(ckpt, ok_run, tmp_path):
    prompts = ["What is a volcano?", "Describe the moon and the stars."]  # not in the training data
    out_file = tmp_path / "out.jsonl"
    cfg_path = tmp_path / "gen.yaml"
    cfg_path.write_text(
        json.dumps(gen_cfg(ckpt, adapter_dir=str(ok_run), prompt=prompts, max_new_tokens=20, output_file=str(out_file)))
    )
    before, _ = run_inprocess(gen_cfg(ckpt, prompt=prompts, max_new_tokens=20))
    tune_in_process("run", "generate", "--config", str(cfg_path))
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    im_end = 2  # <|im_end|> in the SmolLM2 tokenizer
    for base, row in zip(before, rows):
        assert base.text.strip() != "OK"  # the base model does not answer this way
        assert row["text"].strip() == "OK", row
        assert row["stopped"] and row["tokens"][-1] == im_end and len(row["tokens"]) < 20
    # the merged model the run saved (step folder as checkpoint_dir) answers the same
    merged, _ = run_inprocess(
        gen_cfg(
            ok_run,
            checkpointer=checkpointer_node(ok_run),
            prompt=prompts,
            max_new_tokens=20,
        )
    )
    assert [r.tokens for r in merged] == [r["tokens"] for r in rows]


def test_chat_loop_keeps_history_and_switches_adapters(ckpt, two_adapters):
    cfg = gen_cfg(ckpt, chat=True, adapters={"terse": str(two_adapters["terse"])}, max_new_tokens=4)
    results, _ = run_inprocess(cfg, stdin="Hello!\n/adapter terse\nAnd again?\nexit\nnever read\n")
    assert len(results) == 2
    assert [r.adapter for r in results] == [None, "terse"]
    first, second = results
    assert second.prompt_tokens[: len(first.prompt_tokens)] == first.prompt_tokens  # the history is in the prompt
    assert len(second.prompt_tokens) > len(first.prompt_tokens) + 4


def test_missing_adapter_dir_is_a_clear_error(ckpt, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        run_inprocess(gen_cfg(ckpt, adapter_dir=str(tmp_path / "nope"), prompt="hi"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no adapter in"):
        run_inprocess(gen_cfg(ckpt, adapter_dir=str(tmp_path / "empty"), prompt="hi"))
    cfg_path = tmp_path / "gen.yaml"
    cfg_path.write_text(json.dumps(gen_cfg(ckpt, adapter_dir=str(tmp_path / "nope"), prompt="hi")))
    proc = tune_in_process("run", "generate", "--config", str(cfg_path), check=False)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "nope" in proc.stderr and "Traceback" not in proc.stderr


def test_adapter_for_another_model_is_a_clear_error(ckpt, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.recipes.helpers import TINY

    other = LlamaForCausalLM(LlamaConfig(**dict(TINY, hidden_size=32, intermediate_size=64)))
    get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="does not fit this model.*input size 32"):
        run_inprocess(gen_cfg(ckpt, adapter_dir=str(tmp_path / "other"), prompt="hi"))


def test_bad_config_errors(ckpt, two_adapters):
    with pytest.raises(ConfigError, match="unknown adapter 'nope'"):
        run_inprocess(
            gen_cfg(ckpt, adapters={"terse": str(two_adapters["terse"])}, prompt=[{"user": "hi", "adapter": "nope"}])
        )
    with pytest.raises(ConfigError, match="LoRA builder"):
        run_inprocess(
            gen_cfg(
                ckpt, model=model_node({"lora_attn_modules": ["q_proj"], "lora_rank": 4, "lora_alpha": 8}), prompt="hi"
            )
        )
    with pytest.raises(ConfigError, match="max_new_token"):
        run_inprocess(gen_cfg(ckpt, max_new_token=3, prompt="hi"))
    with pytest.raises(ConfigError, match="nothing to generate"):
        run_inprocess(gen_cfg(ckpt))
