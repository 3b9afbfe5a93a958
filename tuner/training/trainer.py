"""The one training loop every fine-tuning recipe uses.

A recipe supplies a `FinetuneMethod` (which parameters train, how weights load, what a checkpoint
holds) and a placement (one device or FSDP2 across ranks); everything else lives here, read top
to bottom: `setup()` builds the run from the config, `train()` loops over epochs and steps with
gradient accumulation, clipping, logging, validation and checkpoints, and resumes exactly.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import ExitStack
from functools import partial
from typing import Any, Callable, NoReturn

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from tuner.checkpoint import capture_rng_state, restore_rng_state
from tuner.checkpoint.fill import build_on_meta, fill_model
from tuner.config import instantiate, parse, resolve_component, to_container
from tuner.config.settings import read_settings
from tuner.data.collate import padded_collate_packed, padded_collate_sft
from tuner.data.messages import CROSS_ENTROPY_IGNORE_IDX
from tuner.devices import dtype_name, get_dtype
from tuner.errors import ConfigError, TrainingError
from tuner.models.decoding import generate
from tuner.peft import trainable_params_summary
from tuner.training import memory
from tuner.training.data_order import ResumableSampler
from tuner.training.loss import build_loss
from tuner.training.metric_logging import MetricLogger, StdoutLogger
from tuner.training.next_steps import next_steps
from tuner.training.optim import OptimizerInBackward, build_optimizer
from tuner.training.placement import ModelParts, Placement, SingleDevice, TrainingState
from tuner.training.profiler import setup_torch_profiler
from tuner.training.settings import FullSettings, TrainingSettings
from tuner.training.step_numbers import StepNumbers
from tuner.training.untrained_tokens import repair_untrained_tokens


class FinetuneMethod:
    """What differs between full fine-tuning and LoRA; recipes subclass it. Its methods are the
    hooks the loop calls; `tune cp <recipe> my_recipe.py` writes a recipe's subclass out with every
    hook's source, to edit (tuner/cli/recipe_copy.py)."""

    name = "full"
    #: The method's own top-level config keys (a settings dataclass; see tuner.training.settings).
    settings: type = FullSettings

    def may_be_missing(self, model: nn.Module) -> set[str]:
        """State-dict keys the checkpoint's model weights need not hold (none, for full fine-tuning)."""
        return set()

    def after_load(self, trainer: "Trainer", model: nn.Module, checkpoint: dict) -> None:
        """Anything to do once the weights are in (LoRA: initialise or load the adapters)."""

    def set_trainable(self, trainer: "Trainer", model: nn.Module) -> None:
        """Choose which parameters train (all, for full fine-tuning)."""
        for p in model.parameters():
            p.requires_grad_(True)

    def param_groups(self, trainer: "Trainer", model: nn.Module) -> list[Any]:
        """What the optimizer steps: the trainable parameters (or param-group dicts)."""
        return [p for p in model.parameters() if p.requires_grad]

    def checkpoint_state(self, trainer: "Trainer", model: nn.Module, final: bool) -> dict:
        """The weights part of a checkpoint: ``{"model": full state dict}``."""
        return {"model": trainer.placement.full_state_dict(model)}

    def training_state(self, trainer: "Trainer", model: nn.Module) -> dict:
        """What the method needs back to resume exactly, beyond the weights part and the optimizer
        (plain data: tensors, numbers). Saved in the training state; on resume `before_training` gets it
        back on every rank, and `after_load` finds it in ``checkpoint["training_state"]["method"]`` when
        the state is whole (not sharded) (none, for full fine-tuning and LoRA)."""
        return {}

    def before_training(self, trainer: "Trainer", model: nn.Module, saved: dict) -> None:
        """Anything to do on every rank once the model is placed and, on resume, its training state
        loaded (a sharded one included), before the first step; ``saved`` is what `training_state`
        returned for the checkpoint resumed from (empty for a new run). Delta-LoRA: remember the
        adapters' starting values, on the placed (maybe sharded) model."""

    def moved_frozen_params(self, trainer: "Trainer", model: nn.Module) -> list[nn.Parameter]:
        """Frozen parameters the method changes in training (Delta-LoRA's base weights): a sharded
        training state saves and loads them with the trainable ones (none, by default)."""
        return []

    def after_optimizer_step(self, trainer: "Trainer", model: nn.Module, step_index: int) -> None:
        """Anything to do after optimizer step ``step_index`` (counted from 0), under ``no_grad``
        (Delta-LoRA: move the frozen base weights by the adapters' change)."""

    def loss_step(self, trainer: "Trainer", batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """One micro-batch's summed loss and its number of loss tokens (the loop divides the sum of
        a step's losses by the step's token count, across ranks, and calls backward)."""
        batch = batch_on_device(batch, trainer.device)
        labels = batch["labels"]
        n_tokens = (labels[:, 1:] != CROSS_ENTROPY_IGNORE_IDX).sum()
        with forward_context(trainer):
            loss_sum = trainer.model(batch["tokens"], labels, mask=batch.get("mask"), input_pos=batch.get("input_pos"))
        return loss_sum, n_tokens

    def setup(self, trainer: "Trainer") -> None:
        """Anything the method needs besides the model it trains, once that is built (DPO: its loss
        and the frozen reference model)."""

    def model_with_loss(self, trainer: "Trainer", decoder: nn.Module) -> nn.Module:
        """The module the loop trains and `loss_step` calls: the decoder with the ``loss`` key's loss."""
        return CausalLMWithLoss(decoder, build_loss(trainer.settings.loss))

    def collate(self, trainer: "Trainer", packed: bool) -> Callable | None:
        """How samples become a batch (None: the loop's own, from ``collate_fn`` or padding)."""
        return None

    def window_metrics(self, trainer: "Trainer") -> dict[str, torch.Tensor]:
        """Numbers to log beside the loss for the micro-batches since the last call, across ranks
        (every rank calls it; DPO: rewards and reward accuracy)."""
        return {}


def batch_on_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors (and a FlexAttention ``BlockMask``) on ``device``."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v.to(device) if hasattr(v, "to") else v
        for k, v in batch.items()
    }


def forward_context(trainer: "Trainer") -> ExitStack:
    """What every training forward runs under: fp16 autocast (with a gradient scaler) and
    activation offloading when on."""
    stack = ExitStack()
    if trainer.grad_scaler is not None:
        stack.enter_context(torch.autocast(trainer.device.type, dtype=torch.float16))
    stack.enter_context(memory.activation_offloading(trainer.settings.enable_activation_offloading))
    return stack


#: The numbers every step logs; a method's `window_metrics` come on top.
_STEP_KEYS = ("loss", "grad_norm", "lr", "tokens_per_second", "wait_for_gpu_s")


class CausalLMWithLoss(nn.Module):
    """Decoder + loss in one forward, so sharding wrappers see the output projection used."""

    def __init__(self, decoder: nn.Module, loss_fn: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.loss_fn = loss_fn

    def forward(
        self, tokens: torch.Tensor, labels: torch.Tensor, mask: Any = None, input_pos: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden = self.decoder.hidden(tokens, mask=mask, input_pos=input_pos)
        return self.loss_fn(hidden, labels, self.decoder.project, frozen_weight=self.decoder.frozen_output_weight())


class Trainer:
    """Builds a run from its config and trains it. See the module docstring."""

    def __init__(self, cfg: DictConfig, method: FinetuneMethod, placement: type[Placement] = SingleDevice) -> None:
        """``placement``: where the model lives (`SingleDevice`, or `tuner.training.distributed.FSDP2`
        under torchrun); built here from the run's settings."""
        self.settings: TrainingSettings
        self.settings, self.method_settings = read_settings(cfg, *self.settings_classes(method, placement))
        self.cfg = cfg
        self.method = method
        s = self.settings
        self.placement = placement.from_settings(s)
        self.device = self.placement.device
        self.dtype = get_dtype(s.dtype, self.device)
        # fp16 is mixed precision: float32 weights, float16 autocast, a gradient scaler.
        self.param_dtype = torch.float32 if self.dtype is torch.float16 else self.dtype
        self.batch_size = s.batch_size
        self.epochs = s.epochs
        self.grad_accum = s.gradient_accumulation_steps
        self.max_steps_per_epoch = s.max_steps_per_epoch
        self.clip_grad_norm = s.clip_grad_norm
        self.log_every = s.log_every_n_steps
        self.save_every = s.save_every_n_steps
        self.optimizer_in_bwd = s.optimizer_in_bwd
        self.checkpoint_every = s.checkpoint_every
        self.seed = s.seed
        self.global_step = 0
        self.epoch = 0
        self.batches_done = 0  # micro-batches already consumed in the current epoch
        self.last_epoch_steps = 0  # optimizer steps the last finished epoch took (it may have been cut short)
        self.resumed_from: int | None = None  # the step a resumed run started from
        #: The method's own objects for this run (Delta-LoRA's previous factors); methods are shared.
        self.method_state: dict[str, Any] = {}
        #: Token ids whose untrained embedding rows `fix_untrained_tokens` repaired at load.
        self.repaired_tokens: list[int] = []

    @staticmethod
    def settings_classes(method: FinetuneMethod, placement: type[Placement] = SingleDevice) -> tuple[type, ...]:
        """The settings classes a config for ``method`` on ``placement`` is checked against (its top-level keys)."""
        return (placement.settings, method.settings)

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        memory.use_expandable_segments(self.device)
        self._seed_everything()
        self.loggers = self._build_loggers()
        if self.placement.is_main:
            for logger in self.loggers:
                logger.log_config(to_container(cfg))

        self.checkpointer = instantiate(cfg.checkpointer, resume_from_checkpoint=self.settings.resume_from_checkpoint)
        parts = ModelParts(
            build=lambda: build_on_meta(cfg.model, self.param_dtype),
            fill=self._load_weights,
            prepare=self._prepare_model,
        )
        self.tokenizer = instantiate(cfg.tokenizer)  # before the weights: fix_untrained_tokens reads its template
        self.model, checkpoint = self.placement.build_model(parts, self.checkpointer)
        self.decoder = self.model.decoder
        self.method.setup(self)
        self.dataloader, self.sampler = self._build_dataloader(cfg.dataset, shuffle=self.settings.shuffle)
        self.val_dataloader = None
        if self.settings.dataset_val is not None:
            self.val_dataloader, _ = self._build_dataloader(cfg.dataset_val, shuffle=False)

        steps_per_epoch = len(self.sampler) // self.grad_accum
        if self.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, int(self.max_steps_per_epoch))
        if steps_per_epoch == 0:
            raise ConfigError(
                f"the dataset gives no full optimizer step ({self.sampler.dataset_len} samples, "
                f"batch_size={self.batch_size}, "
                f"gradient_accumulation_steps={self.grad_accum}, {self.placement.world_size} rank(s))",
                "use more data or a smaller batch_size / gradient_accumulation_steps",
            )
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * self.epochs

        self.optimizer = self._build_optimizer()
        self.lr_scheduler = None
        if self.settings.lr_scheduler is not None:
            target = self.optimizer.lr_proxy if self.optimizer_in_bwd else self.optimizer
            self.lr_scheduler = instantiate(cfg.lr_scheduler, target, num_training_steps=self.total_steps)
        self.grad_scaler = torch.amp.GradScaler(self.device.type) if self.dtype is torch.float16 else None

        training = TrainingState(self.model, self.optimizer, moved=self.method.moved_frozen_params(self, self.decoder))
        resumed = self.placement.load_training_state(self.checkpointer, checkpoint, training)
        if resumed is not None:
            self._restore_training_state(resumed.state)
        self.method.before_training(self, self.decoder, (resumed.state.get("method") if resumed else None) or {})
        self._log_start(resumed.source if resumed is not None else None)

    def _seed_everything(self) -> None:
        if self.seed is None:
            self.seed = int(torch.randint(0, 2**31 - 1, ()).item())
        seed = int(self.seed)  # the same on every rank, so every rank builds the same initial adapters
        random.seed(seed)
        torch.manual_seed(seed)

    def _build_loggers(self) -> list[MetricLogger]:
        node = self.settings.metric_logger
        if not self.placement.is_main:
            return []
        if node is None:
            return [StdoutLogger()]
        nodes = list(node) if isinstance(node, (list, ListConfig)) else [node]
        return [instantiate(n) for n in nodes]

    def _load_weights(self, decoder: nn.Module, device: torch.device) -> dict:
        """Fill a meta-built decoder on ``device`` shard by shard (or randomly, for a checkpointer
        without weights), then let the method finish it (LoRA: adapters); return the rest of the
        checkpoint (adapter, training state)."""
        missing = self.method.may_be_missing(decoder)
        checkpoint = fill_model(
            decoder, self.checkpointer, device, self.param_dtype, missing, random_if_no_weights=True
        )
        if self.settings.fix_untrained_tokens:
            self.repaired_tokens = repair_untrained_tokens(decoder, self.tokenizer)
        self.method.after_load(self, decoder, checkpoint)
        return checkpoint

    def _prepare_model(self, model: nn.Module) -> nn.Module:
        """The decoder made ready to train (trainable set, memory features) with its loss; the
        placement shards it or not."""
        self.method.set_trainable(self, model)
        if self.settings.mlp_chunk_size is not None:
            memory.tile_mlps(model, self.settings.mlp_chunk_size)
        if self.checkpoint_every is not None:
            memory.apply_activation_checkpointing(
                model,
                self.settings.nf4_keep_dense_for_backward,
                self.checkpoint_every,
                offload=self.settings.enable_activation_offloading,
            )
        if self.settings.compile:
            memory.compile_layers(model)
        # The loop normalises by the token count of the whole accumulation window, so it needs sums.
        return self.method.model_with_loss(self, model)

    def _build_dataloader(self, ds_cfg: Any, shuffle: bool) -> tuple[DataLoader, ResumableSampler]:
        nodes = list(ds_cfg) if isinstance(ds_cfg, (list, ListConfig)) else [ds_cfg]
        datasets = [instantiate(n, self.tokenizer) for n in nodes]
        dataset = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
        packed = any(bool(OmegaConf.select(n, "packed", default=False)) for n in nodes)
        sampler = ResumableSampler(
            len(dataset),
            self.batch_size,
            shuffle=shuffle,
            seed=int(self.seed),
            rank=self.placement.rank,
            world_size=self.placement.world_size,
        )
        collate = self._collate_fn(packed)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.settings.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        return loader, sampler

    def _collate_fn(self, packed: bool):
        own = self.method.collate(self, packed)
        if own is not None:
            return own
        if packed:
            return partial(padded_collate_packed, use_flex=self.device.type == "cuda")
        node = self.settings.collate_fn
        if node is not None:
            fn = resolve_component(node if isinstance(node, str) else node["_component_"], "collate_fn")
            return partial(fn, padding_idx=self.tokenizer.pad_id, ignore_idx=CROSS_ENTROPY_IGNORE_IDX)
        return partial(padded_collate_sft, padding_idx=self.tokenizer.pad_id, ignore_idx=CROSS_ENTROPY_IGNORE_IDX)

    def _build_optimizer(self):
        if self.optimizer_in_bwd:
            return OptimizerInBackward(self.cfg.optimizer, self.model, self.device)
        groups = self.method.param_groups(self, self.decoder)
        return build_optimizer(self.cfg.optimizer, groups, self.device)

    def _log_start(self, resumed_from: str | None) -> None:
        """``resumed_from``: what the training state was read from (None: a new run)."""
        if not self.placement.is_main:
            return
        where = "resuming at" if resumed_from is not None else "starting at"
        how = f" ({resumed_from})" if resumed_from else ""
        print(
            f"[tuner] {self.method.name}: {trainable_params_summary(self.decoder)}; "
            f"{self.total_steps} steps ({self.steps_per_epoch}/epoch x {self.epochs}); {where} step "
            f"{self.global_step}{how}; "
            f"device {self.device}, dtype {str(self.dtype).replace('torch.', '')}",
            flush=True,
        )
        logs = [loc for logger in self.loggers if (loc := logger.location())]
        print(
            f"[tuner] outputs: checkpoints go to {self.checkpointer.output_dir}/step_<N>"
            + (f"; metrics to {', '.join(logs)}" if logs else ""),
            flush=True,
        )

    # ------------------------------------------------------------- resume
    def _loop_state(self) -> dict:
        """Where the loop is (the same on every rank)."""
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "last_epoch_steps": self.last_epoch_steps,
            "seed": int(self.seed),
            "total_epochs": self.epochs,
            "max_steps_per_epoch": -1 if self.max_steps_per_epoch is None else int(self.max_steps_per_epoch),
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else {},
            "method": self.method.training_state(self, self.decoder),
        }

    def _rank_state(self) -> dict:
        """What may differ between ranks: random generators, the gradient scaler."""
        return {"grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler else {}, "rng": capture_rng_state()}

    def _restore_training_state(self, state: dict) -> None:
        """Continue where ``state`` (the loop's and this rank's, as saved; the placement has loaded
        the optimizer) says."""
        if int(state["seed"]) != int(self.seed):
            raise ConfigError(
                f"seed={self.seed} differs from the checkpoint's seed={state['seed']}; the data order would change",
                f"set seed={state['seed']} to resume exactly",
            )
        self.global_step = int(state["global_step"])
        self.resumed_from = self.global_step
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])
        self.last_epoch_steps = int(state.get("last_epoch_steps", 0))
        if self.batches_done == 0 and self.epoch > 0 and 0 < self.last_epoch_steps < self.steps_per_epoch:
            # The last epoch was cut short by a smaller max_steps_per_epoch: continue it where it stopped.
            self.epoch -= 1
            self.batches_done = self.last_epoch_steps * self.grad_accum
        if self.lr_scheduler and state.get("lr_scheduler"):
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
            # A scheduler's state does not hold its optimizer's current lr; optimizer_in_bwd's lr
            # proxy is in no optimizer state either, so set it from the schedule.
            target = self.optimizer.lr_proxy if self.optimizer_in_bwd else self.optimizer
            for group, lr in zip(target.param_groups, self.lr_scheduler.get_last_lr()):
                group["lr"] = lr
        if self.grad_scaler and state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        restore_rng_state(state["rng"])

    def _check_finite_weights(self) -> None:
        """Refuse to save weights that overflowed (a finite loss can precede them)."""
        if not self.placement.all_finite([p for p in self.decoder.parameters() if p.requires_grad]):
            raise TrainingError(
                f"weights became nan/inf by step {self.global_step}; stopped without saving them (the last "
                "checkpoint is intact)",
                "lower the learning rate, enable clip_grad_norm, or use dtype=bf16/fp32",
            )

    def save_checkpoint(self, final: bool = False) -> None:
        """Write ``step_<N>/``: the exported model (the method's weights part) and the training state,
        as the placement keeps it (whole in ``training_state.pt``, or each rank's shards)."""
        self._check_finite_weights()
        state = self.method.checkpoint_state(self, self.decoder, final)
        state["training_dtype"] = dtype_name(self.dtype)
        adapter_only = bool(getattr(self.method_settings, "save_adapter_weights_only", False))
        training = TrainingState(
            self.model,
            self.optimizer,
            loop=self._loop_state(),
            rank=self._rank_state(),
            moved=self.method.moved_frozen_params(self, self.decoder),
        )
        self.placement.save_checkpoint(
            self.checkpointer, state, training, step=self.global_step, epoch=self.epoch, adapter_only=adapter_only
        )

    # -------------------------------------------------------------- train
    def _forward_backward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.method.loss_step(self, batch)

    def train(self) -> None:
        self.model.train()
        profiler = self._profiler()
        progress = self._progress()
        for epoch in range(self.epoch, self.epochs):
            self.epoch = epoch
            self.sampler.set_epoch(epoch, skip_batches=self.batches_done)
            steps_done_in_epoch = self.batches_done // self.grad_accum
            if steps_done_in_epoch >= self.steps_per_epoch:
                self._end_epoch()
                continue
            window_loss = torch.zeros((), device=self.device)
            window_tokens = torch.zeros((), device=self.device, dtype=torch.long)
            window_positions, t0 = 0, time.perf_counter()
            pending: StepNumbers | None = None  # the last step's numbers, still on their way from the GPU
            for batch in self.dataloader:
                loss_sum, n_tokens = self._forward_backward_step(batch)
                window_loss += loss_sum.detach()
                window_tokens += n_tokens
                window_positions += batch["tokens"].numel()
                self.batches_done += 1
                if self.batches_done % self.grad_accum != 0:
                    continue
                total_tokens = self.placement.all_reduce_sum(window_tokens.clone())
                window_mean = self.placement.all_reduce_sum(window_loss.clone()) / total_tokens.clamp(min=1)
                if (
                    pending is not None
                ):  # this step is queued on the GPU by now: reading the last one costs no idle time
                    self._report(pending, progress)
                grad_norm = self._optimizer_step(window_tokens)
                self.global_step += 1
                steps_done_in_epoch += 1
                elapsed = time.perf_counter() - t0
                pending = StepNumbers(
                    self.global_step,
                    {
                        "loss": window_mean,
                        "grad_norm": grad_norm,
                        "lr": self._lr(),
                        "tokens_per_second": window_positions / max(elapsed, 1e-9),
                        **self.method.window_metrics(self),
                    },
                )
                if profiler is not None:
                    profiler.step()
                last_of_epoch = steps_done_in_epoch >= self.steps_per_epoch
                save_now = bool(self.save_every) and self.global_step % int(self.save_every) == 0 and not last_of_epoch
                if last_of_epoch or save_now or self._validation_due():
                    self._report(pending, progress)  # a non-finite loss must stop the run before anything is saved
                    pending = None
                self._maybe_validate()
                if save_now:
                    self.save_checkpoint()
                window_loss.zero_()
                window_tokens.zero_()
                window_positions, t0 = 0, time.perf_counter()
                if last_of_epoch:
                    break
            if pending is not None:
                self._report(pending, progress)
            self._end_epoch()
        if progress is not None:
            progress.close()
        if profiler is not None:
            profiler.stop()

    def _end_epoch(self) -> None:
        self.last_epoch_steps = self.batches_done // self.grad_accum
        self.epoch += 1
        self.batches_done = 0
        self.save_checkpoint(final=self.epoch >= self.epochs)

    def _forward_backward_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        loss_sum, n_tokens = self._forward_backward(batch)
        if self.grad_accum == 1:
            # Normalise now: the same result as scaling gradients later, and it works with optimizer_in_bwd.
            global_tokens = self.placement.all_reduce_sum(n_tokens.clone()).clamp(min=1)
            scaled = loss_sum * (self.placement.world_size / global_tokens)
        else:
            scaled = loss_sum
        if self.grad_scaler is not None:
            scaled = self.grad_scaler.scale(scaled)
        scaled.backward()
        return loss_sum, n_tokens

    def _optimizer_step(self, window_tokens: torch.Tensor) -> torch.Tensor | None:
        if self.optimizer_in_bwd:
            self._after_optimizer_step()
            if self.lr_scheduler:
                self.lr_scheduler.step()
            return None
        params = [p for p in self.decoder.parameters() if p.grad is not None]
        if self.grad_accum != 1:
            global_tokens = self.placement.all_reduce_sum(window_tokens.clone()).clamp(min=1)
            factor = self.placement.world_size / global_tokens
            torch._foreach_mul_([p.grad for p in params], factor.to(params[0].grad.dtype) if params else factor)
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.clip_grad_norm is not None:
            grad_norm = self.placement.clip_grad_norm(params, float(self.clip_grad_norm))
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self._after_optimizer_step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.lr_scheduler:
            self.lr_scheduler.step()
        return grad_norm

    @torch.no_grad()
    def _after_optimizer_step(self) -> None:
        self.method.after_optimizer_step(self, self.decoder, self.global_step)  # global_step: this step's index

    def _lr(self) -> float:
        opt = self.optimizer.lr_proxy if self.optimizer_in_bwd else self.optimizer
        return float(opt.param_groups[0]["lr"])

    def _report(self, numbers: StepNumbers, progress: Any) -> None:
        """Check, log and show a finished step's numbers (see `StepNumbers`: they arrive a step late)."""
        start = time.perf_counter()
        values = numbers.read()
        values["wait_for_gpu_s"] = time.perf_counter() - start
        loss = values["loss"]
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss is {loss} at step {numbers.step}; stopped without saving it (the last checkpoint is intact)",
                "lower the learning rate, enable clip_grad_norm, or use dtype=bf16/fp32",
            )
        tokens_per_second = values["tokens_per_second"]
        if numbers.step % self.log_every == 0 or numbers.step == self.total_steps:
            self._log_step(
                numbers.step,
                loss,
                values["grad_norm"],
                values["lr"],
                tokens_per_second,
                progress,
                wait_for_gpu_s=values["wait_for_gpu_s"],
                extra={k: v for k, v in values.items() if k not in _STEP_KEYS},
            )
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.4f}", lr=f"{values['lr']:.2e}", tok_s=f"{tokens_per_second:.0f}")

    def _log_step(
        self,
        step: int,
        loss: float,
        grad_norm: float | None,
        lr: float,
        tokens_per_second: float,
        progress: Any,
        wait_for_gpu_s: float | None = None,
        extra: dict[str, float] | None = None,
    ) -> None:
        """``wait_for_gpu_s``: how long the loop waited for this step's numbers, a step later; near
        zero means the step was done when the next one was queued: the GPU waited for the CPU, or the
        step has more launches than CUDA's queue holds (~1,000), so the CPU could not run further ahead.
        ``extra``: the method's own numbers (`FinetuneMethod.window_metrics`)."""
        if not self.placement.is_main:
            return
        metrics: dict[str, Any] = {"loss": loss, "lr": lr, "tokens_per_second_per_gpu": tokens_per_second}
        if wait_for_gpu_s is not None and self.device.type == "cuda":
            metrics["wait_for_gpu_s"] = wait_for_gpu_s
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        metrics.update(extra or {})
        if self.settings.log_peak_memory_stats:
            metrics.update(memory.memory_stats(self.device))
        for logger in self.loggers:
            if progress is not None and isinstance(logger, StdoutLogger):
                continue  # the progress bar shows these
            logger.log_dict(metrics, step=step)

    def _validation_due(self) -> bool:
        every = self.settings.run_val_every_n_steps
        return self.val_dataloader is not None and bool(every) and self.global_step % int(every) == 0

    def _maybe_validate(self) -> None:
        if not self._validation_due():
            return
        val_loss = self.evaluate(self.val_dataloader, max_batches=self.settings.max_validation_steps)
        metrics = {f"val_{k}": float(v) for k, v in self.method.window_metrics(self).items()}
        if self.placement.is_main:
            for logger in self.loggers:
                logger.log_dict({"val_loss": val_loss, **metrics}, step=self.global_step)

    @torch.no_grad()
    def evaluate(self, loader: DataLoader, max_batches: int | None = None) -> float:
        """Mean token loss over ``loader`` (all ranks together)."""
        self.model.eval()
        total = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device, dtype=torch.long)
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= int(max_batches):
                break
            loss_sum, n_tokens = self._forward_backward(batch)
            total += loss_sum
            count += n_tokens
        self.model.train()
        return (self.placement.all_reduce_sum(total) / self.placement.all_reduce_sum(count).clamp(min=1)).item()

    def _progress(self):
        if not self.placement.is_main or not self.settings.progress_bar:
            return None
        return tqdm(total=self.total_steps, initial=self.global_step, desc="train", dynamic_ncols=True, leave=True)

    def _profiler(self):
        """The ``profiler`` node (torchtune's keys, `tuner.training.profiler`), started; None when off."""
        node = self.settings.profiler
        if node is None or not node.get("enabled", False):
            return None
        settings = to_container(node)
        settings.setdefault("output_dir", f"{self.cfg.output_dir}/profiling_outputs")
        component = settings.pop("_component_", None)
        built = instantiate({"_component_": component, **settings}) if component else setup_torch_profiler(**settings)
        prof = built[0] if isinstance(built, tuple) else built
        prof.start()
        return prof

    def close(self) -> None:
        for logger in getattr(self, "loggers", []):
            logger.close()
        self.placement.close()

    def run(self) -> None:
        """setup(), train(), close(); with ``sample_generation`` set, answers before and after.
        A resumed run that has no step left says so and trains nothing."""
        try:
            self.setup()
            if self.epoch >= self.epochs:
                if self.placement.is_main:
                    print(
                        f"[tuner] nothing to train: the checkpoint at step {self.global_step} already finished this "
                        "run "
                        f"({self.epochs} epoch(s) of {self.steps_per_epoch} step(s)); to train more, resume with a "
                        "larger "
                        "epochs or max_steps_per_epoch",
                        flush=True,
                    )
                    self._print_next_steps()
                return
            self.sample("before fine-tuning" if self.resumed_from is None else f"resumed from step {self.resumed_from}")
            self.train()
            self.sample("after fine-tuning")
            if self.placement.is_main:
                self._print_next_steps()
        finally:
            self.close()

    def _print_next_steps(self) -> None:
        """Where the last checkpoint is and how to use it (rank 0, at the end of a run)."""
        for line in next_steps(self.cfg, self.checkpointer):
            print(f"[tuner] {line}", flush=True)

    @torch.no_grad()
    def sample(self, label: str) -> list[str]:
        """Greedy answers to ``sample_generation.prompts`` (chat-formatted), printed on rank 0.

        Config: ``sample_generation: {prompts: [...], max_new_tokens: 64, system: null}``.
        """
        node = self.settings.sample_generation
        if node is None or not self.placement.whole_model:
            return []
        answers = []
        was_training = self.decoder.training
        self.decoder.eval()
        for prompt in node.prompts:
            system = node.get("system")
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}
            ]
            tokens, _ = self.tokenizer.tokenize_messages(messages, add_generation_prompt=True)
            out = generate(
                self.decoder, tokens, int(node.get("max_new_tokens") or 64), stop_tokens=self.tokenizer.stop_tokens
            )
            answers.append(self.tokenizer.decode(out[len(tokens) :].tolist()).strip())
            print(f"[{label}] {prompt}\n  -> {answers[-1]}", flush=True)
        self.decoder.train(was_training)
        return answers


def training_recipe(method: FinetuneMethod, placement: type[Placement] = SingleDevice) -> Callable[..., NoReturn]:
    """A training recipe's entry point: ``recipe.py --config x.yaml a=b`` (or ``tune run``) reads the
    config and runs ``Trainer(cfg, method, placement=placement)``, errors reported as one ``error:`` line.
    The recipe itself says only what is its own: its method and its placement."""

    @parse
    def recipe_main(cfg: DictConfig) -> None:
        Trainer(cfg, method, placement=placement).run()

    return recipe_main
