"""torchtune's ``torchtune.modules.common_utils`` names (the implementation is in `tuner.quantization`)."""

from tuner.quantization import reparametrize_as_dtype_state_dict_post_hook  # noqa: F401
