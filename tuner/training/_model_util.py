"""`disable_dropout` (torchtune's ``torchtune.training._model_util``)."""

from __future__ import annotations

import warnings

from torch import nn


def disable_dropout(model: nn.Module) -> None:
    """Set every non-zero ``nn.Dropout`` of ``model`` to p=0, warning about each one."""
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p != 0:
            warnings.warn(
                f"Found Dropout with value {module.p} in module {module}. Setting to zero.", UserWarning, stacklevel=2
            )
            module.p = 0
