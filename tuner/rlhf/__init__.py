"""torchtune's ``torchtune.rlhf`` path, for code written against torchtune: ``rlhf.loss`` holds the
preference losses (`tuner.training.preference_loss`). PPO's helpers are not provided."""
