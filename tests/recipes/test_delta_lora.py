"""Delta-LoRA on a tiny real checkpoint. `lora_finetune_single_device`: the base moves by the
paper's rule (checked against a direct float64 implementation of it, step by step), with no
gradient or optimizer state; the checkpoint is the merged model, which transformers loads with the
trained logits; an interrupted run resumed from its checkpoint gives the same losses and weights;
combinations that cannot work are refused with one error line. `lora_finetune_distributed` (2 gloo
processes, FSDP2, rows split unevenly): the same losses, merged model and logits as one device, the
moved base weights in the sharded training state, and an exact resume."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.recipes.helpers import (
    logged_losses,
    make_hf_checkpoint,
    model_node,
    train_in_process,
    tune,
    write_config,
)
from tuner.config import load_config
from tuner.errors import ConfigError
from tuner.peft import DeltaLoRA, LoRALinear
from tuner.training.lora import LoRAFinetune
from tuner.training.trainer import Trainer

LORA = {"lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": True, "lora_rank": 4, "lora_alpha": 8}
RATIO, START = 0.5, 1
OPTIMIZER = {"_component_": "torch.optim.AdamW", "lr": 1e-2, "weight_decay": 0.01}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf_tiny_delta"), initializer_range=0.2)


def _trainer(tmp_path: Path, ckpt: Path, out: str = "out", lora: dict = LORA, **overrides) -> Trainer:
    settings = dict(
        delta_lora_update_ratio=RATIO, delta_lora_start_step=START, max_steps_per_epoch=4, optimizer=OPTIMIZER
    )
    settings.update(overrides)
    cfg = load_config(write_config(tmp_path / f"{out}.yaml", ckpt, tmp_path / out, lora=lora, **settings))
    return Trainer(cfg, LoRAFinetune())


def test_base_moves_by_the_paper_rule_with_no_gradient_or_optimizer_state(ckpt, tmp_path):
    trainer = _trainer(tmp_path, ckpt)
    trainer.setup()
    delta = trainer.method_state["delta_lora"]
    layers = {name: m for name, m in trainer.decoder.named_modules() if isinstance(m, LoRALinear)}
    assert set(delta.layers) == set(layers) and len(layers) == 2 * 5  # q, v, w1, w2, w3 of 2 layers
    # A direct implementation in float64: W_{t+1} = W_t + lambda * alpha / r * (B_{t+1} A_{t+1} - B_t A_t), t > K.
    product = {n: (m.lora_b.weight.double() @ m.lora_a.weight.double()) for n, m in layers.items()}
    expected = {n: m.weight.double().clone() for n, m in layers.items()}
    other = {k: v.clone() for k, v in trainer.decoder.state_dict().items() if ".lora_" not in k}
    record = delta.after_step

    def after_step(step_index: int) -> None:
        record(step_index)
        for name, m in layers.items():
            new = m.lora_b.weight.double() @ m.lora_a.weight.double()
            if step_index > START:
                expected[name] += RATIO * (8 / 4) * (new - product[name])
            product[name] = new
            torch.testing.assert_close(m.weight.double(), expected[name], rtol=0, atol=1e-6)

    delta.after_step = after_step
    trainer.train()
    trainer.close()

    moved = {n for n, m in layers.items() if not torch.equal(m.weight, other[f"{n}.weight"])}
    assert moved == set(layers)  # every adapted base weight moved ...
    after = trainer.decoder.state_dict()
    unadapted = [k for k in other if k.removesuffix(".weight") not in layers]
    assert unadapted and all(torch.equal(after[k], other[k]) for k in unadapted)  # ... and nothing else did
    # W needs no gradient and no optimizer state.
    assert all(not m.weight.requires_grad and m.weight.grad is None for m in layers.values())
    state_params = {id(p) for p in trainer.optimizer.state}
    assert state_params and not state_params & {id(m.weight) for m in layers.values()}
    assert state_params <= {id(p) for n, p in trainer.decoder.named_parameters() if ".lora_" in n}

    # The checkpoint is the merged model alone (no adapter over the original base), as transformers loads it.
    step = tmp_path / "out" / "step_4"
    assert (step / "model.safetensors").is_file() and not (step / "adapter").exists()
    _assert_transformers_gives_the_logits_of(step, trainer.decoder)


def _assert_transformers_gives_the_logits_of(folder: Path, decoder: torch.nn.Module) -> None:
    """transformers loads ``folder`` (a merged model) with ``decoder``'s logits (base W and adapters apart)."""
    from transformers import AutoModelForCausalLM

    tokens = torch.randint(0, 49152, (2, 11))
    decoder.eval()
    with torch.no_grad():
        ours = decoder(tokens)
        theirs = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)(tokens).logits
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)


def test_resume_from_a_checkpoint_is_exact(ckpt, tmp_path):
    """Six steps straight through (saving at step 3) equal three steps, then a resume from step 3."""
    from safetensors.torch import load_file

    straight = _trainer(tmp_path, ckpt, "straight", max_steps_per_epoch=6, save_every_n_steps=3, shuffle=True)
    straight.run()
    resumed = _trainer(
        tmp_path,
        ckpt,
        "resumed",
        max_steps_per_epoch=6,
        shuffle=True,
        resume_from_checkpoint=str(tmp_path / "straight" / "step_3"),
    )
    resumed.run()
    assert resumed.resumed_from == 3
    a, b = logged_losses(tmp_path / "straight"), logged_losses(tmp_path / "resumed")
    assert sorted(b) == [4, 5, 6] and all(a[s] == b[s] for s in b), (a, b)
    wa = load_file(tmp_path / "straight" / "step_6" / "model.safetensors")
    wb = load_file(tmp_path / "resumed" / "step_6" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize(
    "lora, words",
    [
        ({**LORA, "quantize_base": True}, "NF4"),
        ({**LORA, "base_dtype": "fp8"}, "FP8"),
        ({**LORA, "lora_dropout": 0.1}, "lora_dropout: 0.0"),
        ({**LORA, "use_dora": True}, "use_dora"),
    ],
)
def test_combinations_delta_lora_cannot_update_are_refused(ckpt, tmp_path, lora, words):
    with pytest.raises(ConfigError, match=words):
        _trainer(tmp_path, ckpt, lora=lora).setup()


def test_cli_refuses_an_adapter_only_checkpoint_in_one_line(ckpt, tmp_path, capsys):
    from tuner.cli.main import main

    cfg = write_config(tmp_path / "c.yaml", ckpt, tmp_path / "out", lora=LORA, delta_lora_update_ratio=RATIO)
    assert main(["validate", str(cfg), "save_adapter_weights_only=True"]) != 0
    err = capsys.readouterr().err
    assert "error:" in err and "save_adapter_weights_only=False" in err and "Traceback" not in err


def test_resuming_a_delta_lora_checkpoint_without_it_is_refused(ckpt, tmp_path):
    first = _trainer(tmp_path, ckpt, "first", max_steps_per_epoch=2)
    first.run()
    again = _trainer(
        tmp_path,
        ckpt,
        "first",
        max_steps_per_epoch=3,
        delta_lora_update_ratio=None,
        resume_from_checkpoint=True,
    )
    with pytest.raises(ConfigError, match="delta_lora_update_ratio"):
        again.setup()


def test_fsdp_cpu_offload_is_refused_before_any_weight_is_read():
    model = torch.nn.Module()
    model.q = LoRALinear(8, 8, rank=2, alpha=4)
    trainer = SimpleNamespace(
        method_settings=SimpleNamespace(delta_lora_update_ratio=0.5), placement=SimpleNamespace(cpu_offload=True)
    )
    with pytest.raises(ConfigError, match="fsdp_cpu_offload: False"):
        LoRAFinetune().set_trainable(trainer, model)
    trainer.placement.cpu_offload = False
    LoRAFinetune().set_trainable(trainer, model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["q.lora_a.weight", "q.lora_b.weight"]


def test_shipped_quickstart_config_trains_and_saves_a_merged_model_only(ckpt, tmp_path, capsys):
    """`smollm2/135M_delta_lora_cpu` as shipped, with only the model's size, the checkpoint, the data and
    the step count overridden: its keys turn Delta-LoRA on and the checkpoint is a merged model."""
    from tests.recipes.helpers import shipped_quickstart_args
    from tuner.cli.main import main

    out = tmp_path / "out"
    args = [*shipped_quickstart_args("delta_lora", ckpt, out), "delta_lora_start_step=0"]
    assert main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr()
    assert "Delta-LoRA: after each optimizer step t > 0" in printed.err
    # The next step it prints generates with the merged model, not with an adapter the generation config names.
    assert f"checkpointer.checkpoint_dir={out / 'step_2'} adapter_dir=null" in printed.out
    step = out / "step_2"
    assert (step / "model.safetensors").is_file() and not (step / "adapter").exists()


def test_stochastic_rounding_to_bf16_is_unbiased():
    from tuner.peft.delta_lora import round_to_bf16_stochastically

    x = torch.full((200_000,), 1.0 + 2.0**-9)  # a quarter of bf16's step (2**-7) above 1.0
    rounded = round_to_bf16_stochastically(x, torch.Generator().manual_seed(0))
    assert rounded.dtype == torch.bfloat16
    assert set(rounded.float().unique().tolist()) == {1.0, 1.0 + 2.0**-7}  # one of the two neighbours
    assert abs(rounded.float().mean().item() - x[0].item()) < 2e-5  # up a quarter of the time
    assert torch.equal(rounded.to(torch.float32).to(torch.bfloat16), rounded)


def test_a_bf16_base_keeps_changes_below_its_rounding_step():
    """Each step moves W by far less than half a bf16 step: rounded to nearest W would never move;
    rounded stochastically it moves by the exact total on average."""
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.q = LoRALinear(64, 64, rank=2, alpha=4, dtype=torch.bfloat16)  # B starts at zero
    layer, steps = model.q, 300
    w0, a = layer.weight.detach().float().clone(), layer.lora_a.weight.detach().float()
    delta = DeltaLoRA(model, update_ratio=0.5, start_step=0, seed=3)
    direction = torch.randn(64, 2) * 2e-4
    with torch.no_grad():
        for t in range(1, steps + 1):  # B grows by the same small step each optimizer step
            layer.lora_b.weight.copy_(t * direction)
            delta.after_step(t)
    half_ulp = torch.exp2(torch.floor(torch.log2(w0.abs())) - 8)
    total = 0.5 * 2 * layer.lora_b.weight.detach().float() @ a  # the changes add up to lambda * s * B_T A
    assert (total.abs() / steps < half_ulp).float().mean() > 0.9  # to nearest, nearly every change is lost
    moved = layer.weight.detach().float() - w0
    assert (moved - total).abs().mean() < 0.3 * total.abs().mean()
    assert abs((moved - total).mean().item()) < 0.02 * total.abs().mean().item()


class _Rows:
    """`RowShards` of one "rank" holding rows ``start:stop`` of every row-sharded tensor (A gathered whole)."""

    def __init__(self, module: LoRALinear, start: int, stop: int) -> None:
        self.sharded = {id(module.weight), id(module.lora_b.weight)}
        self.start, self.stop = start, stop

    def local_rows(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        return (tensor[self.start : self.stop], self.start) if id(tensor) in self.sharded else (tensor, 0)

    def full_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def test_ranks_moving_their_own_rows_give_the_one_device_weights_bit_for_bit():
    """A bf16 base of 7 rows split 4 + 3 (FSDP2's uneven shards): each "rank" moves its rows of W from
    its rows of B and the whole A, rounding with the whole tensor's random bits: the same bits as one device."""
    torch.manual_seed(0)
    whole, split = torch.nn.Module(), torch.nn.Module()
    whole.q = LoRALinear(5, 7, rank=3, alpha=6, dtype=torch.bfloat16, init_lora_weights=False)
    split.q = LoRALinear(5, 7, rank=3, alpha=6, dtype=torch.bfloat16)
    split.load_state_dict(whole.state_dict())
    start = whole.q.weight.detach().clone()
    one = DeltaLoRA(whole, update_ratio=0.5, seed=3)
    ranks = [DeltaLoRA(split, 0.5, seed=3, shards=_Rows(split.q, a, b)) for a, b in ((0, 4), (4, 7))]
    with torch.no_grad():
        for step in range(1, 4):
            change = {k: torch.randn_like(v) * 0.1 for k, v in whole.state_dict().items() if ".lora_" in k}
            for model in (whole, split):
                for k, v in model.state_dict().items():
                    v.add_(change.get(k, torch.zeros_like(v)))
            one.after_step(step)
            for rank in ranks:
                rank.after_step(step)
    assert not torch.equal(whole.q.weight, start)
    assert torch.equal(split.q.weight, whole.q.weight)


# --------------------------------------------------------------- lora_finetune_distributed, 2 gloo processes
TWO = ("--nproc_per_node", "2", "--standalone")
#: w1/w3 have 127 rows (two ranks hold 64 + 63) and lora_rank 3 splits each A's rows 2 + 1: uneven shards.
UNEVEN = {"lora_attn_modules": ["q_proj", "v_proj"], "apply_lora_to_mlp": True, "lora_rank": 3, "lora_alpha": 6}


def _uneven_config(tmp: Path, ckpt: Path, out: str, **overrides) -> dict:
    """`write_config`'s keys for 4 steps of Delta-LoRA on the uneven model, saving at step 2."""
    return dict(
        path=tmp / f"{out}.yaml",
        ckpt=ckpt,
        out=tmp / out,
        model={**model_node(UNEVEN), "intermediate_dim": 127},
        delta_lora_update_ratio=RATIO,
        delta_lora_start_step=START,
        max_steps_per_epoch=4,
        save_every_n_steps=2,
        shuffle=True,
        optimizer=OPTIMIZER,
        **overrides,
    )


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-process Delta-LoRA run of 4 steps (batch 2 per rank) on the uneven model; (its folder, the checkpoint)."""
    tmp = tmp_path_factory.mktemp("delta_two")
    ckpt = make_hf_checkpoint(tmp / "hf", initializer_range=0.2, intermediate_size=127)
    cfg = write_config(**_uneven_config(tmp, ckpt, "dist", batch_size=2))
    run = tune("run", *TWO, "lora_finetune_distributed", "--config", str(cfg))
    assert "Delta-LoRA: after each optimizer step t > 1" in run.stderr
    return tmp, ckpt


def _merged(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "step_4" / "model.safetensors")


@pytest.mark.distributed
def test_two_processes_train_as_one_device(two_processes):
    """Same losses (1e-5) and merged weights (1e-6) as one device with the global batch; the base moved;
    transformers loads the 2-process folder with the one-device model's trained logits."""
    from safetensors.torch import load_file

    tmp, ckpt = two_processes
    single = train_in_process(**_uneven_config(tmp, ckpt, "single", batch_size=4))
    ls, ld = logged_losses(tmp / "single"), logged_losses(tmp / "dist")
    assert sorted(ls) == sorted(ld) == [1, 2, 3, 4]
    assert all(abs(ls[s] - ld[s]) < 1e-5 for s in ls), (ls, ld)
    a, b = _merged(tmp / "single"), _merged(tmp / "dist")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    original = load_file(ckpt / "model.safetensors")["model.layers.0.mlp.gate_proj.weight"]
    assert (single.decoder.layers[0].mlp.w1.weight - original).abs().max() > 1e-3  # Delta-LoRA moved the base
    assert not (tmp / "dist" / "step_4" / "adapter").exists()
    _assert_transformers_gives_the_logits_of(tmp / "dist" / "step_4", single.decoder)


@pytest.mark.distributed
def test_two_processes_resume_exactly_from_the_sharded_state(two_processes):
    """The sharded state of step 2 holds each rank's rows of the moved base weights (no optimizer state for
    them); resumed on 2 processes the run ends as the straight one, bit for bit. The resumed run saves a
    gathered training state (sharded_state=False), which one device resumes into the trained model."""
    from torch.distributed.checkpoint import FileSystemReader

    tmp, ckpt = two_processes
    saved = FileSystemReader(str(tmp / "dist" / "step_2" / "sharded_state")).read_metadata().state_dict_metadata
    modules = ("attn.q_proj", "attn.v_proj", "mlp.w1", "mlp.w2", "mlp.w3")
    bases = {f"decoder.layers.{i}.{m}.weight" for i in (0, 1) for m in modules}
    assert {f"model.{k}" for k in bases} <= set(saved)
    optimized = {k.removeprefix("optimizer.state.").rsplit(".", 1)[0] for k in saved if k.startswith("optimizer.")}
    assert optimized and not optimized & bases

    step_2 = str(tmp / "dist" / "step_2")
    resumed = write_config(**_uneven_config(tmp, ckpt, "resumed", batch_size=2, resume_from_checkpoint=step_2))
    run = tune("run", *TWO, "lora_finetune_distributed", "--config", str(resumed), "checkpointer.sharded_state=False")
    assert "resuming at step 2 (sharded training state of 2 ranks)" in run.stdout
    la, lb = logged_losses(tmp / "dist"), logged_losses(tmp / "resumed")
    assert sorted(lb) == [3, 4] and all(la[s] == lb[s] for s in lb), (la, lb)
    wa, wb = _merged(tmp / "dist"), _merged(tmp / "resumed")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    gathered = tmp / "resumed" / "step_4"
    assert (gathered / "training_state.pt").is_file() and not (gathered / "sharded_state").exists()
    one = Trainer(
        load_config(write_config(**_uneven_config(tmp, ckpt, "one", resume_from_checkpoint=str(gathered)))),
        LoRAFinetune(),
    )
    one.setup()
    assert one.resumed_from == 4
    _assert_transformers_gives_the_logits_of(gathered, one.decoder)  # moved base + adapter = the merged model
    one.close()
