"""torchtune's ``torchtune.rlhf.loss`` (and older ``torchtune.modules.rlhf.loss``) names: the
preference losses of `tuner.training.preference_loss`. ``PPOLoss`` is not provided (tuner has no PPO)."""

from tuner.training.preference_loss import DPOLoss, IPOLoss, PreferenceLoss, RSOLoss, SimPOLoss

__all__ = ["DPOLoss", "IPOLoss", "PreferenceLoss", "RSOLoss", "SimPOLoss"]
