"""Preference losses (DPO and its relatives): per-pair losses and rewards from sequence log-probs.

Each loss takes the policy's log-probabilities of the chosen and rejected responses (and, when it
``uses_reference``, the frozen reference model's) and returns ``(losses, chosen_rewards,
rejected_rewards)``, one value per pair, as torchtune's ``torchtune.rlhf.loss`` modules do. A
response's log-probability is the sum over its trained (unmasked) tokens, or the mean when the
loss says ``average_log_probs`` (IPO, SimPO: length-normalised, as TRL computes them).

- `DPOLoss` (Rafailov et al. 2023, sigmoid), with ``label_smoothing`` > 0 the conservative cDPO;
- `RSOLoss`: the hinge loss of RSO / SLiC;
- `IPOLoss` (Azar et al. 2023): squared distance of the log-ratio margin to ``1 / (2 tau)``;
- `SimPOLoss` (Meng et al. 2024): reference-free, length-normalised, with a target margin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuner.errors import ConfigError

Losses = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _positive(name: str, value: float, loss: str) -> float:
    if not value > 0:
        raise ConfigError(f"loss.{name} must be > 0 for {loss} (got {value})", f"set loss.{name} to e.g. 0.1")
    return float(value)


def _smoothing(value: float, loss: str) -> float:
    if not 0 <= value < 0.5:
        raise ConfigError(
            f"loss.label_smoothing must be in [0, 0.5) for {loss} (got {value})",
            "use 0 for plain DPO, or the assumed fraction of flipped labels (e.g. 0.1) for cDPO",
        )
    return float(value)


def _sigmoid_loss(logits: torch.Tensor, scale: float, label_smoothing: float) -> torch.Tensor:
    """``-log sigmoid(scale * logits)``, mixed with the flipped label by ``label_smoothing`` (cDPO)."""
    return -F.logsigmoid(scale * logits) * (1 - label_smoothing) - F.logsigmoid(-scale * logits) * label_smoothing


class PreferenceLoss(nn.Module):
    """The interface every preference loss keeps (see the module docstring)."""

    #: Whether the loss compares against a frozen reference model's log-probs.
    uses_reference = True
    #: Whether the log-probs are per-token means over the response instead of sums.
    average_log_probs = False

    def forward(
        self,
        policy_chosen_logps: torch.Tensor,
        policy_rejected_logps: torch.Tensor,
        reference_chosen_logps: torch.Tensor | None = None,
        reference_rejected_logps: torch.Tensor | None = None,
    ) -> Losses:
        raise NotImplementedError

    @staticmethod
    def _margins(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        """(policy chosen - rejected) - (reference chosen - rejected): the log-ratio margin."""
        return (pc - pr) - (rc - rr)

    @staticmethod
    def _rewards(scale: float, pc: torch.Tensor, pr: torch.Tensor, rc, rr) -> tuple[torch.Tensor, torch.Tensor]:
        """Implicit rewards ``scale * (policy - reference)`` of chosen and rejected (no gradient)."""
        if rc is None:
            return scale * pc.detach(), scale * pr.detach()
        return scale * (pc - rc).detach(), scale * (pr - rr).detach()


class DPOLoss(PreferenceLoss):
    """DPO's sigmoid loss ``-log sigmoid(beta * margin)``; ``label_smoothing`` (in [0, 0.5)) is cDPO's
    assumed fraction of flipped labels. torchtune's ``torchtune.rlhf.loss.DPOLoss``."""

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.beta = _positive("beta", beta, "DPOLoss")
        self.label_smoothing = _smoothing(label_smoothing, "DPOLoss")

    def forward(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        pc, pr, rc, rr = policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        losses = _sigmoid_loss(self._margins(pc, pr, rc, rr), self.beta, self.label_smoothing)
        return (losses, *self._rewards(self.beta, pc, pr, rc, rr))


class RSOLoss(PreferenceLoss):
    """The hinge loss ``relu(1 - gamma * margin)`` (RSO / SLiC). torchtune's ``RSOLoss``."""

    def __init__(self, gamma: float = 0.1) -> None:
        super().__init__()
        self.gamma = _positive("gamma", gamma, "RSOLoss")

    def forward(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        pc, pr, rc, rr = policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        losses = torch.relu(1 - self.gamma * self._margins(pc, pr, rc, rr))
        return (losses, *self._rewards(self.gamma, pc, pr, rc, rr))


class IPOLoss(PreferenceLoss):
    """IPO's ``(margin - 1 / (2 tau))^2`` on per-token mean log-probs (as TRL, and the IPO authors,
    normalise it). torchtune's former ``IPOLoss``."""

    average_log_probs = True

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        self.tau = _positive("tau", tau, "IPOLoss")

    def forward(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps):
        pc, pr, rc, rr = policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        losses = (self._margins(pc, pr, rc, rr) - 1 / (2 * self.tau)) ** 2
        return (losses, *self._rewards(self.tau, pc, pr, rc, rr))


class SimPOLoss(PreferenceLoss):
    """SimPO: reference-free, ``-log sigmoid(beta * (chosen - rejected) - gamma)`` on per-token mean
    log-probs (``label_smoothing`` as in cDPO). torchtune's former ``SimPOLoss``; TRL's CPO trainer
    with ``loss_type="simpo"``."""

    uses_reference = False
    average_log_probs = True

    def __init__(self, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.beta = _positive("beta", beta, "SimPOLoss")
        self.gamma = float(gamma)
        self.label_smoothing = _smoothing(label_smoothing, "SimPOLoss")

    def forward(self, policy_chosen_logps, policy_rejected_logps, *reference_unused):
        pc, pr = policy_chosen_logps, policy_rejected_logps
        logits = (pc - pr) - self.gamma / self.beta
        losses = _sigmoid_loss(logits, self.beta, self.label_smoothing)
        return (losses, *self._rewards(self.beta, pc, pr, None, None))
