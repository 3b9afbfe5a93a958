"""What preference fine-tuning (DPO, RSO, IPO, SimPO) means to the training loop.

The loop is the SFT one; the method differs. A batch holds preference pairs (chosen sequences,
then rejected ones, padded together); the policy's log-probability of each response (its trained
tokens, the prompt masked) and the frozen reference's go into a `PreferenceLoss` from
`tuner.training.preference_loss` (the ``loss`` key, default `DPOLoss`), which gives one loss and
one implicit reward per pair. The loop averages the loss over every pair of a step (across ranks
too) and logs, beside it, the rewards of chosen and rejected responses, the reward accuracy and
margin and the mean log-probs (torchtune's metric names: ``rewards/chosen``, ...).

The reference: for LoRA, the same model with its adapters switched off (no second copy; a QLoRA
base stays NF4); for full fine-tuning, a frozen copy of the base weights (``ref_checkpointer``, by
default the run's checkpointer read without resuming), placed as the policy is (sharded under FSDP2).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from tuner.checkpoint.fill import build_on_meta, fill_model
from tuner.config import instantiate
from tuner.data.collate import padded_collate_dpo
from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.errors import ConfigError, DataError
from tuner.peft import disable_adapter
from tuner.training.full import FullFinetune
from tuner.training.lora import LoRAFinetune
from tuner.training.loss import cross_entropy_sum, shift_labels
from tuner.training.placement import ModelParts
from tuner.training.preference_loss import DPOLoss, PreferenceLoss
from tuner.training.settings import DPOSettings, LoRADPOSettings
from tuner.training.trainer import FinetuneMethod, Trainer, batch_on_device, forward_context

#: The metrics logged each step besides the loss, in the order `PreferenceMethod` accumulates them.
_SUMS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "log_probs/chosen", "log_probs/rejected")


class SequenceLogProbs(nn.Module):
    """Decoder -> each sequence's summed log-probability of its labels (``-100``: not counted) and
    its number of counted tokens. One row's logits at a time, through the loss's cross-entropy,
    which keeps them in the training dtype (no float32 copy) for backward."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(
        self, tokens: torch.Tensor, labels: torch.Tensor, mask: Any = None, input_pos: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.decoder.hidden(tokens, mask=mask, input_pos=input_pos)
        targets = shift_labels(labels)
        logps = [-cross_entropy_sum(self.decoder.project(row), target) for row, target in zip(hidden, targets)]
        return torch.stack(logps), (targets != CROSS_ENTROPY_IGNORE_IDX).sum(-1)


def collate_pairs(
    batch: Sequence[Mapping[str, Any]], padding_idx: int, ignore_idx: int = CROSS_ENTROPY_IGNORE_IDX
) -> dict[str, torch.Tensor]:
    """Preference pairs -> ``{"tokens", "labels"}`` ``[2b, longest]``: the chosen, then the rejected."""
    if batch and "chosen_input_ids" not in batch[0]:
        raise DataError(
            f"the dataset gives samples with keys {sorted(batch[0])}, not preference pairs "
            "(chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels)",
            "use a preference dataset: tuner.datasets.preference_dataset or stack_exchange_paired_dataset",
        )
    tokens, labels = padded_collate_dpo(batch, padding_idx=padding_idx, ignore_idx=ignore_idx)
    return {"tokens": tokens, "labels": labels}


def build_preference_loss(node: Any) -> PreferenceLoss:
    """The ``loss`` node as a `PreferenceLoss` (none: `DPOLoss` with its defaults)."""
    if node is None:
        return DPOLoss()
    loss = instantiate(node)
    if not isinstance(loss, PreferenceLoss):
        raise ConfigError(
            f"loss {type(loss).__module__}.{type(loss).__name__} is not a preference loss",
            "use tuner.rlhf.loss.DPOLoss, RSOLoss, IPOLoss or SimPOLoss (or a subclass of "
            "tuner.training.preference_loss.PreferenceLoss)",
        )
    return loss


class PreferenceMethod(FinetuneMethod):
    """The preference part shared by the LoRA and full DPO methods: pairs, loss, metrics. A
    subclass says what the reference is (`reference_log_probs`)."""

    name = "DPO"

    def setup(self, trainer: Trainer) -> None:
        self.loss_fn = build_preference_loss(trainer.settings.loss)
        self.sums = torch.zeros(len(_SUMS) + 1, device=trainer.device)  # the metrics' sums, then the pair count
        self.reference = self.frozen_reference(trainer) if self.loss_fn.uses_reference else None

    def frozen_reference(self, trainer: Trainer) -> nn.Module | None:
        """A separate frozen reference model, built once (None: the reference needs none)."""
        return None

    def model_with_loss(self, trainer: Trainer, decoder: nn.Module) -> nn.Module:
        return SequenceLogProbs(decoder)

    def collate(self, trainer: Trainer, packed: bool) -> Callable | None:
        if packed:
            raise ConfigError("preference datasets cannot be packed", "set dataset.packed=False")
        return partial(collate_pairs, padding_idx=trainer.tokenizer.pad_id)

    def reference_log_probs(self, trainer: Trainer, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The frozen reference's summed log-probs of each sequence (called without gradients)."""
        raise NotImplementedError

    def loss_step(self, trainer: Trainer, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed loss of the batch's pairs, and the number of pairs (the loop averages over pairs)."""
        batch = batch_on_device(batch, trainer.device)
        tokens, labels = batch["tokens"], batch["labels"]
        with forward_context(trainer):
            logps, counts = trainer.model(tokens, labels)
        reference = []
        if self.loss_fn.uses_reference:
            with torch.no_grad(), forward_context(trainer):
                reference = [self.reference_log_probs(trainer, tokens, labels).float()]
        if self.loss_fn.average_log_probs:
            logps, reference = logps / counts.clamp(min=1), [r / counts.clamp(min=1) for r in reference]
        policy_chosen, policy_rejected = logps.chunk(2)
        losses, chosen_rewards, rejected_rewards = self.loss_fn(
            policy_chosen, policy_rejected, *(half for r in reference for half in r.chunk(2))
        )
        with torch.no_grad():
            sums = torch.stack(
                [
                    chosen_rewards.sum(),
                    rejected_rewards.sum(),
                    (chosen_rewards > rejected_rewards).float().sum(),
                    policy_chosen.detach().sum(),
                    policy_rejected.detach().sum(),
                    torch.tensor(float(len(losses)), device=losses.device),
                ]
            )
            self.sums += sums.to(self.sums.device)
        return losses.sum(), torch.tensor(len(losses), device=losses.device)

    def window_metrics(self, trainer: Trainer) -> dict[str, torch.Tensor]:
        """Means over the pairs since the last call (every rank's): rewards, accuracy, margin, log-probs."""
        totals = trainer.placement.all_reduce_sum(self.sums.clone())
        self.sums.zero_()
        means = dict(zip(_SUMS, totals[:-1] / totals[-1].clamp(min=1)))
        means["rewards/margins"] = means["rewards/chosen"] - means["rewards/rejected"]
        return means


class LoRADPO(PreferenceMethod, LoRAFinetune):
    """LoRA-family DPO: adapters train; the reference is the same model with its adapters off."""

    name = "LoRA DPO"
    settings = LoRADPOSettings

    def reference_log_probs(self, trainer: Trainer, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with disable_adapter(trainer.decoder):
            return trainer.model(tokens, labels)[0]


class FullDPO(PreferenceMethod, FullFinetune):
    """Full DPO: every weight trains; the reference is a frozen copy of the base weights."""

    name = "full DPO"
    settings = DPOSettings

    def frozen_reference(self, trainer: Trainer) -> nn.Module | None:
        return build_reference(trainer)

    def reference_log_probs(self, trainer: Trainer, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.reference(tokens, labels)[0]


def build_reference(trainer: Trainer) -> nn.Module:
    """A frozen `SequenceLogProbs` over the base weights (``ref_checkpointer``, else the run's
    checkpointer without resuming: never the policy being trained), placed as the policy is."""
    node = trainer.method_settings.ref_checkpointer or trainer.cfg.checkpointer
    checkpointer = instantiate(node, resume_from_checkpoint=False)

    def freeze(decoder: nn.Module) -> nn.Module:
        decoder.requires_grad_(False)
        return SequenceLogProbs(decoder).eval()

    parts = ModelParts(
        build=lambda: build_on_meta(trainer.cfg.model, trainer.param_dtype),
        fill=lambda decoder, device: fill_model(decoder, checkpointer, device, trainer.param_dtype),
        prepare=freeze,
    )
    reference, _ = trainer.placement.build_model(parts, checkpointer)
    return reference
