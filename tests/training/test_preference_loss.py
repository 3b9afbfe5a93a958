"""Preference losses against the papers' formulas as TRL computes them, on a real model.

The reference implementation below is written from TRL 1.16's source, not from tuner's:
`trl/trainer/dpo_trainer.py` (``DPOTrainer._compute_loss``: per-token log-probs of the completion
from the logits, summed per sequence; ``sigmoid``: ``-logsigmoid(beta * delta)``; ``hinge``:
``relu(1 - beta * delta)``; ``ipo``: the log-ratios divided by the completion length, then
``(delta - 1 / (2 beta))^2``; rewards ``beta * (policy - reference)``) and
`trl/experimental/cpo/cpo_trainer.py` (``loss_type="simpo"``: average log-probs,
``logits = chosen - rejected - gamma / beta``, cDPO's label smoothing as in TRL's former sigmoid
loss). It runs on HF transformers models; tuner runs its own decoder with the same weights
through `SequenceLogProbs` (the recipes' policy and reference forward) and its loss modules. Loss,
rewards and every weight's gradient must agree within 1e-5 in float32.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from tests.recipes.helpers import TINY
from tuner.checkpoint.hf_config import build_model_from_hf_config
from tuner.checkpoint.hf_keys import hf_to_tuner, tuner_to_hf
from tuner.config import instantiate
from tuner.errors import ConfigError
from tuner.training.dpo import SequenceLogProbs, collate_pairs
from tuner.training.preference_loss import DPOLoss, IPOLoss, RSOLoss, SimPOLoss

TOL = 1e-5
# The recipe tests' tiny SmolLM2 shape, with a small vocabulary and an untied output (more weights to check).
CONFIG = {**TINY, "vocab_size": 64, "tie_word_embeddings": False, "attn_implementation": "eager"}


def _hf(seed: int) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG, initializer_range=0.1)).float()


def _tuner(hf: transformers.PreTrainedModel) -> torch.nn.Module:
    cfg = hf.config.to_dict()
    model = build_model_from_hf_config(cfg, "LLAMA3")
    model.load_state_dict(hf_to_tuner(hf.state_dict(), "LLAMA3", cfg), strict=True)
    return model


def _pairs() -> list[dict]:
    """Four pairs of different lengths: a prompt (masked) and a response of each kind."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for prompt_len, chosen_len, rejected_len in ((5, 4, 6), (3, 7, 2), (6, 3, 3), (2, 5, 8)):
        prompt = torch.randint(1, 64, (prompt_len,), generator=gen).tolist()
        row = {}
        for kind, n in (("chosen", chosen_len), ("rejected", rejected_len)):
            response = torch.randint(1, 64, (n,), generator=gen).tolist()
            row[f"{kind}_input_ids"] = prompt + response
            row[f"{kind}_labels"] = [-100] * prompt_len + response
        out.append(row)
    return out


def _trl_logps(hf, input_ids: torch.Tensor, completion_mask: torch.Tensor, average: bool) -> torch.Tensor:
    """TRL's sequence log-probs: log_softmax of the logits at the completion's tokens, summed (or the mean)."""
    logits = hf(input_ids).logits[:, :-1].float()
    per_token = logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    logps = (per_token * mask).sum(-1)
    return logps / mask.sum(-1).clamp(min=1) if average else logps


def _trl_loss(kind: str, args: dict, pc, pr, rc, rr) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if kind == "simpo":
        beta, gamma, eps = args["beta"], args["gamma"], args["label_smoothing"]
        logits = (pc - pr) - gamma / beta
        losses = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
        return losses, beta * pc.detach(), beta * pr.detach()
    beta = args.get("beta", args.get("gamma", args.get("tau")))
    delta = (pc - rc) - (pr - rr)
    if kind == "sigmoid":
        eps = args["label_smoothing"]
        losses = -F.logsigmoid(beta * delta) * (1 - eps) - F.logsigmoid(-beta * delta) * eps
    elif kind == "hinge":
        losses = torch.relu(1 - beta * delta)
    else:  # ipo, on length-normalised log-ratios
        losses = (delta - 1 / (2 * beta)) ** 2
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


CASES = [
    ("sigmoid", DPOLoss, {"beta": 0.1, "label_smoothing": 0.0}),
    ("sigmoid", DPOLoss, {"beta": 0.5, "label_smoothing": 0.2}),  # cDPO
    ("hinge", RSOLoss, {"gamma": 0.3}),
    ("ipo", IPOLoss, {"tau": 0.1}),
    ("simpo", SimPOLoss, {"beta": 2.0, "gamma": 0.5, "label_smoothing": 0.1}),
]


@pytest.mark.parametrize(("kind", "cls", "args"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_loss_rewards_and_gradients_match_trl_formulas(kind, cls, args):
    policy_hf, reference_hf = _hf(0), _hf(1)
    policy, reference = SequenceLogProbs(_tuner(policy_hf)), SequenceLogProbs(_tuner(reference_hf))
    batch = collate_pairs(_pairs(), padding_idx=0)
    tokens, labels = batch["tokens"], batch["labels"]
    loss_fn = cls(**args)
    average = kind in ("ipo", "simpo")
    assert loss_fn.average_log_probs == average and loss_fn.uses_reference == (kind != "simpo")

    # tuner: the recipes' forward and loss
    logps, counts = policy(tokens, labels)
    with torch.no_grad():
        ref_logps, _ = reference(tokens, labels)
    if average:
        logps, ref_logps = logps / counts, ref_logps / counts
    refs = ref_logps.chunk(2) if loss_fn.uses_reference else ()
    losses, chosen_rewards, rejected_rewards = loss_fn(*logps.chunk(2), *refs)
    losses.mean().backward()

    # TRL's formulas on HF transformers with the same weights
    completion = labels != -100
    trl_logps = _trl_logps(policy_hf, tokens, completion, average)
    with torch.no_grad():
        trl_ref = _trl_logps(reference_hf, tokens, completion, average)
    ref_losses, ref_chosen, ref_rejected = _trl_loss(kind, args, *trl_logps.chunk(2), *trl_ref.chunk(2))
    ref_losses.mean().backward()

    # IPO's loss is a square near 25, whose float32 step is 2e-6: the summation order of the log-probs
    # (BLAS-dependent) moves it by a few steps, hence a relative term; the rewards below pin the log-probs
    assert torch.allclose(losses, ref_losses, atol=TOL, rtol=2e-6), losses - ref_losses
    assert torch.allclose(chosen_rewards, ref_chosen, atol=TOL, rtol=0)
    assert torch.allclose(rejected_rewards, ref_rejected, atol=TOL, rtol=0)
    assert losses.std() > 0 and chosen_rewards.abs().max() > 1e-3  # the weights differ: a non-trivial case
    grads = {k: p.grad for k, p in policy.decoder.named_parameters()}
    as_hf = tuner_to_hf(grads, "LLAMA3", policy_hf.config.to_dict())
    hf_grads = dict(policy_hf.named_parameters())
    assert as_hf.keys() == hf_grads.keys()
    for key, grad in as_hf.items():
        assert grad.abs().max() > 0, key
        assert torch.allclose(grad, hf_grads[key].grad, atol=TOL, rtol=0), key


def test_equal_policy_and_reference_give_log2_and_zero_rewards():
    """At the start of DPO the policy is the reference: every pair's loss is log 2, rewards are 0."""
    pc, pr = torch.tensor([-3.0, -7.5]), torch.tensor([-4.0, -1.0])
    losses, chosen, rejected = DPOLoss(beta=0.3)(pc, pr, pc.clone(), pr.clone())
    assert torch.allclose(losses, torch.full((2,), torch.log(torch.tensor(2.0)).item()))
    assert chosen.abs().max() == 0 and rejected.abs().max() == 0


@pytest.mark.parametrize(
    "name",
    ["torchtune.rlhf.loss.DPOLoss", "tuner.rlhf.loss.DPOLoss", "torchtune.modules.rlhf.loss.DPOLoss"],
)
def test_torchtune_loss_names_resolve(name):
    loss = instantiate({"_component_": name, "beta": 0.05, "label_smoothing": 0})
    assert isinstance(loss, DPOLoss) and loss.beta == 0.05
    from tuner.rlhf.loss import DPOLoss as python_path  # torchtune's Python path, renamed

    assert python_path is DPOLoss
    for other, cls in (("RSOLoss", RSOLoss), ("IPOLoss", IPOLoss), ("SimPOLoss", SimPOLoss)):
        assert isinstance(instantiate({"_component_": name.replace("DPOLoss", other)}), cls)


@pytest.mark.parametrize(
    ("cls", "args", "key"),
    [
        (DPOLoss, {"beta": 0.0}, "loss.beta"),
        (DPOLoss, {"label_smoothing": 0.5}, "loss.label_smoothing"),
        (RSOLoss, {"gamma": -1.0}, "loss.gamma"),
        (IPOLoss, {"tau": 0.0}, "loss.tau"),
        (SimPOLoss, {"label_smoothing": -0.1}, "loss.label_smoothing"),
    ],
)
def test_bad_loss_settings_name_the_key_and_the_fix(cls, args, key):
    with pytest.raises(ConfigError) as err:
        cls(**args)
    assert key in err.value.message and err.value.fix
