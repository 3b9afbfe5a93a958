"""Export: merge an adapter into its base model and write one model folder (bf16 by default).

    tune run merge --config llama3_2/merge adapter_dir=/tmp/tuner/llama3_2_1B/lora_single_device/step_100 \
        output_dir=/tmp/Llama-3.2-1B-merged

Works for every adapter a LoRA-family run saves (LoRA, rsLoRA, DoRA, VeRA, PiSSA) and for any
adapter in HF PEFT format. A QLoRA adapter is merged into the *dense* base: the base is loaded
from the original (non-quantized) checkpoint in ``dtype`` and the adapter added in float32, as
PEFT's ``merge_and_unload`` does over a dense model. The result is written by the checkpointer in
the base's format; with ``HFCheckpointer`` it is a complete Hugging Face folder (safetensors,
``config.json`` with the saved dtype, generation config, tokenizer files) that
``transformers.AutoModelForCausalLM.from_pretrained(output_dir)`` loads as is. The folder is
written next to ``output_dir`` first and renamed into place, so it is complete or absent.

Config keys:

- ``model``: the base model builder (e.g. ``tuner.models.llama3_2.llama3_2_1b``; not ``lora_*``).
- ``checkpointer``: the base model (``checkpoint_dir``, ``checkpoint_files``, ``model_type``).
- ``adapter_dir``: the adapter folder (PEFT format; a run's ``step_N`` folder works too). Without
  it the checkpoint is only converted to ``dtype``.
- ``output_dir``: the merged folder to create (must not exist, or be empty).
- ``dtype`` (bf16): dtype of the saved weights (bf16 / fp16 / fp32); ``device`` (cpu) for the merge.
- ``tokenizer``, ``seed``: accepted and unused (so generation configs can be reused).
"""

import sys

from omegaconf import DictConfig

from tuner import config
from tuner.generation.export import merge_checkpoint, merged_summary
from tuner.generation.settings import InferenceSettings, MergeSettings

SETTINGS = (InferenceSettings, MergeSettings)  # the top-level keys this recipe reads


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    print(f"[tuner] {merged_summary(merge_checkpoint(cfg))}", flush=True)


if __name__ == "__main__":
    sys.exit(recipe_main())
