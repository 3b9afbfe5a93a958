"""The placement interface: the trainer leaves everything about ranks to it (no distributed branch
or import of its own), the single-device placement keeps the training state whole and refuses a
sharded one, and a recipe's choice of placement is the one the run uses. The FSDP2 placement
runs end to end in tests/recipes/test_distributed.py (gloo, 2 processes)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from tests.recipes.helpers import make_hf_checkpoint, write_config
from tuner.config import load_config
from tuner.errors import CheckpointError
from tuner.training import trainer as trainer_module
from tuner.training.full import FullFinetune
from tuner.training.placement import Placement, SingleDevice, TrainingState
from tuner.training.trainer import Trainer


def test_the_trainer_has_no_distributed_code_of_its_own():
    tree = ast.parse(inspect.getsource(trainer_module))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if "distributed" in m or "sharded" in m], imported
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"FSDP2", "dist", "dcp", "fully_shard", "DTensor", "full_tensor", "to_local"}, names
    for node in ast.walk(tree):  # world_size may scale numbers, never choose a path
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            assert "world_size" not in ast.unparse(node.test), ast.unparse(node.test)


class _Recorder:
    """A checkpointer stand-in that keeps what it is asked to save."""

    def __init__(self, resume_sharded_state=None):
        self.saved = []
        self.resume_sharded_state = resume_sharded_state

    def save_checkpoint(self, state, step, epoch, adapter_only=False):
        self.saved.append((state, step, epoch, adapter_only))


def test_single_device_keeps_the_training_state_whole_and_reads_it_back():
    placement = SingleDevice(torch.device("cpu"))
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    ckpt = _Recorder()
    training = TrainingState(model, optimizer, loop={"global_step": 7}, rank={"rng": {"cpu": torch.get_rng_state()}})
    state = {"model": placement.full_state_dict(model)}
    placement.save_checkpoint(ckpt, state, training, step=7, epoch=0, adapter_only=False)
    [(state, step, _, _)] = ckpt.saved
    assert step == 7 and set(state) == {"model", "training_state"}
    assert state["training_state"]["global_step"] == 7 and "rng" in state["training_state"]

    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    assert placement.load_training_state(ckpt, {}, TrainingState(model, fresh)) is None  # nothing to resume
    checkpoint = {"training_state": state["training_state"]}
    resumed = placement.load_training_state(ckpt, checkpoint, TrainingState(model, fresh))
    assert resumed.state["global_step"] == 7 and resumed.source == ""
    before, after = optimizer.state_dict()["state"][0], fresh.state_dict()["state"][0]
    assert torch.equal(before["exp_avg"], after["exp_avg"]) and torch.equal(before["step"], after["step"])


def test_single_device_refuses_a_sharded_training_state_before_reading_weights(tmp_path):
    info = {"path": tmp_path / "step_3" / "sharded_state", "world_size": 2, "step_dir": tmp_path / "step_3"}

    def must_not_run():
        raise AssertionError("no weight may be read")

    parts = type("Parts", (), {"build": staticmethod(must_not_run)})()
    with pytest.raises(CheckpointError, match="sharded across 2 processes, but this run has one process"):
        SingleDevice(torch.device("cpu")).build_model(parts, _Recorder(resume_sharded_state=info))


def test_all_finite_and_clip_grad_norm():
    placement = SingleDevice(torch.device("cpu"))
    assert placement.all_finite([torch.ones(3), torch.zeros(2, 2)])
    assert not placement.all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 3.0)
    assert placement.clip_grad_norm([p], 1.0).item() == pytest.approx(6.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-4)


def test_the_recipes_placement_is_the_one_the_run_uses(tmp_path):
    calls = []

    class Recording(SingleDevice):
        def build_model(self, parts, checkpointer):
            calls.append("build_model")
            return super().build_model(parts, checkpointer)

        def save_checkpoint(self, checkpointer, state, training, **kw):
            calls.append("save_checkpoint")
            return super().save_checkpoint(checkpointer, state, training, **kw)

    ckpt = make_hf_checkpoint(tmp_path / "hf")
    cfg = load_config(write_config(tmp_path / "r.yaml", ckpt, tmp_path / "out", max_steps_per_epoch=1))
    trainer = Trainer(cfg, FullFinetune(), placement=Recording)
    trainer.run()
    assert isinstance(trainer.placement, Recording) and calls == ["build_model", "save_checkpoint"]
    assert (tmp_path / "out" / "step_1" / "training_state.pt").is_file()
    assert set(vars(Placement)) >= {
        "build_model",
        "save_checkpoint",
        "load_training_state",
        "all_reduce_sum",
        "full_state_dict",
        "from_settings",
    }
    for recipe, placement in (("full_finetune_single_device", "SingleDevice"), ("lora_finetune_distributed", "FSDP2")):
        text = (Path(trainer_module.__file__).parents[2] / "recipes" / f"{recipe}.py").read_text()
        assert f"training_recipe(METHOD, placement={placement})" in text
