"""`tune run eval`: mean token loss and perplexity equal a transformers computation on the same
batches (base, and base + PEFT adapter); the lm-eval bridge's scores equal transformers'
log-probabilities and greedy generations; a missing lm-eval is a clear error."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from tests.recipes.helpers import (
    alpaca_node,
    checkpointer_node,
    model_node,
    tiny_checkpoint_fixture,
    tune_in_process,
)
from tuner.errors import ConfigError, TunerError

ckpt = tiny_checkpoint_fixture(initializer_range=0.2)


def eval_cfg(ckpt: Path, **overrides) -> dict:
    cfg = {
        "model": model_node(),
        "tokenizer": {
            "_component_": "tuner.models.smollm2.smollm2_tokenizer",
            "path": str(ckpt / "tokenizer.json"),
            "max_seq_len": 160,
        },
        "checkpointer": checkpointer_node(ckpt),
        "dataset": alpaca_node(),
        "batch_size": 3,
        "max_batches": 3,
        "device": "cpu",
        "dtype": "fp32",
    }
    cfg.update(overrides)
    return cfg


def hf_loss(model, ckpt: Path, batch_size: int = 3, max_batches: int = 3) -> tuple[float, int]:
    """Mean next-token loss with transformers over the same tokenised, padded batches."""
    from tuner.evaluation import build_eval_dataloader
    from tuner.models.smollm2 import smollm2_tokenizer

    tok = smollm2_tokenizer(str(ckpt / "tokenizer.json"), max_seq_len=160)
    node = OmegaConf.create(eval_cfg(ckpt)["dataset"])
    total, count = 0.0, 0
    for i, batch in enumerate(build_eval_dataloader(node, tok, batch_size)):
        if i >= max_batches:
            break
        with torch.no_grad():
            logits = model(batch["tokens"]).logits.float()
        labels = batch["labels"][:, 1:]
        total += F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        ).item()
        count += int((labels != -100).sum())
    return total / count, count


def _hf(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def test_recipe_perplexity_equals_transformers(ckpt, tmp_path):
    cfg_path = tmp_path / "eval.yaml"
    cfg_path.write_text(json.dumps(eval_cfg(ckpt, output_file=str(tmp_path / "result.json"))))
    proc = tune_in_process("run", "eval", "--config", str(cfg_path))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    loss, count = hf_loss(_hf(ckpt), ckpt)
    assert result["tokens"] == count > 50
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert json.loads((tmp_path / "result.json").read_text()) == result


def test_perplexity_with_adapter_equals_peft(ckpt, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from tuner.evaluation import run_evaluation

    torch.manual_seed(0)
    get_peft_model(
        _hf(ckpt),
        LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj", "down_proj"]),
    ).save_pretrained(tmp_path / "ad")
    ours = run_evaluation(OmegaConf.create(eval_cfg(ckpt, adapter_dir=str(tmp_path / "ad"))))
    ref, count = hf_loss(PeftModel.from_pretrained(_hf(ckpt), tmp_path / "ad").eval(), ckpt)
    base, _ = hf_loss(_hf(ckpt), ckpt)
    assert ours["tokens"] == count
    assert ours["loss"] == pytest.approx(ref, rel=1e-5)
    assert abs(ref - base) > 1e-3  # the adapter matters


def test_tasks_without_lm_eval_is_a_clear_error(ckpt, monkeypatch):
    from tuner.evaluation import run_evaluation

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # not installed
    with pytest.raises(TunerError, match="pip install lm-eval"):
        run_evaluation(OmegaConf.create(eval_cfg(ckpt, tasks=["hellaswag"])))
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        run_evaluation(OmegaConf.create(eval_cfg(ckpt, dataset=None)))
    with pytest.raises(ConfigError, match="max_batch"):
        run_evaluation(OmegaConf.create(eval_cfg(ckpt, max_batch=3)))


@pytest.fixture(scope="module")
def scorer_and_hf(ckpt):
    from tuner.evaluation import TunerLMScorer
    from tuner.generation import load_inference_model

    loaded = load_inference_model(OmegaConf.create(eval_cfg(ckpt)))
    return TunerLMScorer(loaded.model, loaded.tokenizer, max_gen_toks=12), _hf(ckpt), loaded.tokenizer


class Req:
    def __init__(self, *args):
        self.args = args


def test_loglikelihood_matches_transformers(scorer_and_hf):
    scorer, hf, tok = scorer_and_hf
    reqs = [
        Req("Question: what is two plus two?\nAnswer:", " four"),
        Req("The capital of France is ", "Paris."),
        Req("", "Hello world"),
    ]
    got = scorer.loglikelihood(reqs)
    for req, (lp, greedy) in zip(reqs, got):
        ctx, cont = scorer._context_continuation(*req.args)
        assert (
            tok.decode(ctx + cont) == tok.decode(tok.encode(req.args[0] + req.args[1], add_bos=True, add_eos=False))
            or not req.args[0]
        )
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = hf(ids).logits.float().log_softmax(-1)[0, len(ctx) - 1 : -1]
        target = torch.tensor(cont)
        assert lp == pytest.approx(float(logp.gather(-1, target[:, None]).sum()), abs=1e-3)
        assert greedy == bool((logp.argmax(-1) == target).all())
    # the context's trailing space moves to the continuation, as the harness's HF model does
    ctx, cont = scorer._context_continuation("The capital of France is ", "Paris.")
    assert tok.decode(cont).startswith(" Paris")

    text = "Rivers carry water from the mountains to the sea, shaping valleys on the way."
    (rolling,) = scorer.loglikelihood_rolling([Req(text)])
    seq = [tok.bos_id if tok.bos_id is not None else tok.eos_id] + tok.encode(text, add_bos=False, add_eos=False)
    with torch.no_grad():
        logp = hf(torch.tensor([seq])).logits.float().log_softmax(-1)[0, :-1]
    assert rolling == pytest.approx(float(logp.gather(-1, torch.tensor(seq[1:])[:, None]).sum()), abs=1e-3)


def test_generate_until_matches_transformers_greedy(scorer_and_hf):
    from transformers import GenerationConfig

    scorer, hf, tok = scorer_and_hf
    context = "Once upon a time"
    ids = torch.tensor([tok.encode(context, add_bos=True, add_eos=False)])
    out = hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        generation_config=GenerationConfig(
            max_new_tokens=12, do_sample=False, eos_token_id=tok.stop_tokens, pad_token_id=0
        ),
    )
    full = tok.decode(out[0, ids.shape[1] :].tolist())
    assert len(full) > 6
    until = full[4:6]
    (plain,), (cut,) = (
        scorer.generate_until([Req(context, {"max_gen_toks": 12})]),
        scorer.generate_until([Req(context, {"until": [until]})]),
    )
    assert plain == full
    assert cut == full.split(until, 1)[0]


def test_lm_eval_model_wiring(scorer_and_hf, monkeypatch):
    """make_lm_eval_model/run_lm_eval against a stand-in for the lm_eval package's interface."""
    from tuner.evaluation import make_lm_eval_model, run_lm_eval

    scorer, _, tok = scorer_and_hf

    class LM:
        def __init__(self):
            self._rank, self._world_size = 0, 1

    def simple_evaluate(model, tasks, num_fewshot=None, limit=None):
        assert isinstance(model, LM)
        ((lp, _),) = model.loglikelihood([Req("A cat is an", " animal")])
        return {"results": {t: {"ll": lp, "limit": limit} for t in tasks}}

    api = types.ModuleType("lm_eval.api")
    api.model = types.SimpleNamespace(LM=LM)
    fake = types.ModuleType("lm_eval")
    fake.api, fake.simple_evaluate = api, simple_evaluate
    monkeypatch.setitem(sys.modules, "lm_eval", fake)
    monkeypatch.setitem(sys.modules, "lm_eval.api", api)
    monkeypatch.setitem(sys.modules, "lm_eval.api.model", api.model)
    lm = make_lm_eval_model(scorer.model, tok)
    results = run_lm_eval(lm, ["toy"], limit=5)
    assert results["toy"]["ll"] == pytest.approx(scorer.loglikelihood([Req("A cat is an", " animal")])[0][0])
    assert results["toy"]["limit"] == 5
