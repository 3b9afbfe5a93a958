"""Config loading, overrides, instantiate and validate: behaviour and error messages."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.config.test_generated_configs import _generator
from tuner.config import apply_overrides, find_problems, instantiate, load_config, validate
from tuner.errors import ConfigError, UsageError
from tuner.registry import all_configs, resolve_config


def write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_load_interpolation_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, "out: /tmp/x\nlogger:\n  log_dir: ${out}/logs\nlr: 1.0\nopt:\n  a: 1\n  b: 2\n"))
    apply_overrides(cfg, ["lr=3e-4", "opt.c=[1, 2]", "~opt.a", "new.key=true"])
    assert cfg.lr == pytest.approx(3e-4)
    assert list(cfg.opt.c) == [1, 2] and "a" not in cfg.opt
    assert cfg.new.key is True
    assert cfg.logger.log_dir == "/tmp/x/logs"


def test_bad_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML in .*c\.yaml at line 3.*flow sequence at line 2"):
        load_config(write(tmp_path, "a: 1\nb: [1, 2\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("bad", ["lr", "=3", "a b=1", "~", "~x=1"])
def test_bad_override_syntax(bad):
    with pytest.raises(UsageError, match="bad override"):
        apply_overrides(OmegaConf.create({"x": 1}), [bad])


def test_delete_missing_key():
    with pytest.raises(UsageError, match="cannot delete 'nope'"):
        apply_overrides(OmegaConf.create({"x": 1}), ["~nope"])


def test_instantiate_recursive_args_and_kwargs_override():
    cfg = OmegaConf.create(
        {
            "_component_": "torch.nn.Sequential",
        }
    )
    seq = instantiate(cfg, torch.nn.Identity())
    assert isinstance(seq, torch.nn.Sequential) and len(seq) == 1
    node = OmegaConf.create({"_component_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.5})
    opt = instantiate(node, [torch.nn.Parameter(torch.zeros(2))], lr=0.2)
    assert opt.param_groups[0]["lr"] == 0.2 and opt.param_groups[0]["momentum"] == 0.5
    nested = OmegaConf.create({"_component_": "torch.nn.Sequential", "inner": {"_component_": "torch.nn.Identity"}})
    with pytest.raises(ConfigError, match="unexpected argument 'inner'"):
        instantiate(nested)


def test_component_swap_keeps_other_keys():
    cfg = OmegaConf.create({"opt": {"_component_": "torch.optim.SGD", "lr": 0.1}})
    apply_overrides(cfg, ["opt._component_=torch.optim.AdamW"])
    opt = instantiate(cfg.opt, [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 0.1


def test_unknown_component_did_you_mean():
    with pytest.raises(ConfigError, match=r"'torch.optim' has no 'AdamWW'; did you mean 'torch.optim.AdamW'"):
        instantiate(OmegaConf.create({"_component_": "torch.optim.AdamWW"}))


def test_unknown_module():
    with pytest.raises(ConfigError, match="unknown component 'nosuchpkg.thing'"):
        instantiate(OmegaConf.create({"_component_": "nosuchpkg.thing"}))


def test_validate_reports_every_problem_with_key_path():
    cfg = OmegaConf.create(
        {
            "optimizer": {"_component_": "torch.optim.AdamW", "lrr": 1e-4},
            "loss": {"_component_": "torch.nn.CrossEntropyLos"},
            "model": {"_component_": "torch.nn.Linear", "in_features": 2, "out_features": 2},
            "lists": [{"_component_": "torch.nn.ReLU", "bogus": 1}],
        }
    )
    problems = find_problems(cfg)
    assert any(p.startswith("optimizer.lrr:") and "did you mean 'lr'" in p for p in problems)
    assert any(p.startswith("loss:") and "CrossEntropyLoss" in p for p in problems)
    assert any(p.startswith("lists[0].bogus:") for p in problems)
    assert len(problems) == 3
    with pytest.raises(ConfigError, match="3 problem"):
        validate(cfg)


def test_torchtune_prefix_and_aliases_resolve():
    from tuner.config import resolve_component
    from tuner.training.lr_schedulers import get_cosine_schedule_with_warmup

    assert (
        resolve_component("torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup")
        is get_cosine_schedule_with_warmup
    )


@pytest.mark.parametrize("name", all_configs())
def test_every_shipped_config_validates(name, capsys):
    """`tune validate` on every built-in config: its recipe's keys, types and ranges, and every
    component (imports, argument names and types)."""
    from tuner.cli.main import main
    from tuner.registry import recipe_for_config

    code = main(["validate", name])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"well-formed for recipe {recipe_for_config(name).name}" in out.out


FP8_OVERRIDES = _generator().FP8_COMPUTE_OVERRIDES  # what the headers tell users to add
FP8_NOTED = [name for name in all_configs() if f"add {' '.join(FP8_OVERRIDES)}:" in resolve_config(name).read_text()]


def test_single_device_qlora_configs_name_the_fp8_option():
    """Where users of a QLoRA config look for its faster option: every single-device QLoRA config's header
    (not the long-context ones: their tiled MLP does not compile)."""
    qlora = [n for n in all_configs() if n.endswith("_qlora_single_device")]
    assert len(qlora) >= 15 and FP8_NOTED == qlora


@pytest.mark.parametrize("name", FP8_NOTED)
def test_configs_that_name_the_fp8_option_validate_with_it(name, capsys):
    """The config takes `model.base_dtype=fp8 compile=True` as its header writes them."""
    from tuner.cli.main import main

    assert FP8_OVERRIDES == ("model.base_dtype=fp8", "compile=True")
    assert main(["validate", name, *FP8_OVERRIDES]) == 0, capsys.readouterr().err


def _legacy_register_resolver(name, resolver):  # omegaconf <= 2.3's register_resolver: no use_cache
    raise AssertionError("the legacy register_resolver must not be used")


@pytest.mark.parametrize("legacy", [True, False], ids=["omegaconf<=2.3", "omegaconf>=2.4"])
def test_builtin_model_resolver_registers_on_either_omegaconf_api(monkeypatch, legacy):
    """omegaconf 2.3 (pyproject allows it; the GPU image has it) has a legacy ``register_resolver``
    without ``use_cache``; 2.4 gives that name the new signature. Either way the resolver must register."""
    from omegaconf import OmegaConf

    from tuner.config import _resolvers

    registered = {}

    def new_api(name, resolver, *, replace=False, use_cache=False):
        registered[name] = (resolver, use_cache)

    monkeypatch.setattr(OmegaConf, "has_resolver", staticmethod(lambda name: False))
    monkeypatch.setattr(OmegaConf, "register_new_resolver", staticmethod(new_api))
    monkeypatch.setattr(OmegaConf, "register_resolver", staticmethod(_legacy_register_resolver if legacy else new_api))
    _resolvers.register_resolvers()
    assert registered == {"builtin_model": (_resolvers.builtin_model, True)}
