"""Mean next-token loss and perplexity of a model over a dataset built with the dataset builders."""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Iterable, Optional

import torch
from omegaconf import DictConfig, ListConfig
from torch.utils.data import ConcatDataset, DataLoader

from tuner.config import instantiate
from tuner.data.collate import padded_collate_packed, padded_collate_sft
from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.errors import ConfigError
from tuner.training.loss import ChunkedCrossEntropyLoss


def build_eval_dataloader(
    dataset_cfg: Any, tokenizer: Any, batch_size: int = 1, device: Optional[torch.device] = None
) -> DataLoader:
    """The dataset node(s) (one, or a list that is concatenated) in order, right-padded batches
    (packed datasets give packed batches with their block masks)."""
    if dataset_cfg is None:
        raise ConfigError("the config has no dataset", fix="add a dataset node, e.g. tuner.datasets.alpaca_dataset")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}", fix="set batch_size=1 or more")
    nodes = list(dataset_cfg) if isinstance(dataset_cfg, (list, ListConfig)) else [dataset_cfg]
    datasets = [instantiate(n, tokenizer) for n in nodes]
    dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
    packed = any(bool(n.get("packed", False)) for n in nodes if isinstance(n, (dict, DictConfig)))
    if packed:
        collate = partial(padded_collate_packed, use_flex=device is not None and device.type == "cuda")
    else:
        collate = partial(padded_collate_sft, padding_idx=tokenizer.pad_id, ignore_idx=CROSS_ENTROPY_IGNORE_IDX)
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=False, collate_fn=collate)


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    batches: Iterable[dict],
    max_batches: Optional[int] = None,
    device: Optional[torch.device] = None,
) -> dict[str, float]:
    """``{"loss": mean token loss, "perplexity": exp(loss), "tokens": n}`` over ``batches``.

    Every position whose (next-token) label is not ignored counts once; the loss is summed over
    all of them and divided by their number, so batches of different sizes weigh by their tokens.
    """
    device = device or next(model.parameters()).device
    loss_fn = ChunkedCrossEntropyLoss(num_output_chunks=8, reduction="sum")
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= int(max_batches):
                break
            tokens, labels = batch["tokens"].to(device), batch["labels"].to(device)
            mask, input_pos = batch.get("mask"), batch.get("input_pos")
            mask = mask.to(device) if mask is not None and hasattr(mask, "to") else mask
            input_pos = input_pos.to(device) if input_pos is not None else None
            hidden = model.hidden(tokens, mask=mask, input_pos=input_pos)
            total += loss_fn(hidden, labels, model.project).double()
            count += int((labels[:, 1:] != CROSS_ENTROPY_IGNORE_IDX).sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ConfigError(
            "the dataset gave no tokens to score (every label is masked, or it is empty)",
            fix="use a dataset with trainable tokens (e.g. train_on_input=True), or raise max_batches",
        )
    loss = float(total / count)
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else float("inf"), "tokens": count}
