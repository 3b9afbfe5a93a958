"""torchtune's ``torchtune.training.quantization`` module: tuner quantizes only the frozen base
(NF4 through bitsandbytes, `tuner.quantization`); torchao's quantization-aware training and
quantizers are not supported, which the flag below says to code that checks for them."""

from tuner.errors import unsupported

_torchao_0_7_supported = False  # no torchao QAT in tuner

get_quantizer_mode = unsupported(
    "tuner.training.get_quantizer_mode",
    "torchao quantizers (QAT) are outside tuner's scope",
    "use QLoRA (quantize_base=True) for a quantized base",
)
