"""Small config helpers with torchtune's names: `log_config`, and ``_has_component``."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("tuner")


def _has_component(node: Any) -> bool:
    """Whether a config node describes a component (a mapping with ``_component_``)."""
    return (isinstance(node, dict) or isinstance(node, DictConfig)) and "_component_" in node


def log_config(recipe_name: str, cfg: DictConfig) -> None:
    """Log the resolved config as YAML (rank 0 only), as torchtune's recipes do at start."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    log.info(f"Running {recipe_name} with resolved config:\n\n{OmegaConf.to_yaml(cfg, resolve=True)}")
