"""Chat with a model in the terminal: multi-turn, in the model's chat format, streaming each answer.

    tune run chat --config smollm2/quickstart_generation
    tune run chat --config llama3_2/generation adapter_dir=/tmp/tuner/llama3_2_1B/lora_single_device

The same config and keys as the generate recipe (it is `tune run generate ... chat=True`), without
its prompts: type a message, the model answers and stops at any of its end-of-turn / EOS tokens.
``/reset`` clears the conversation, ``/adapter NAME`` switches adapters, ``exit`` or Ctrl-D ends.
"""

import sys

from omegaconf import DictConfig

from tuner import config
from tuner.generation.runner import GenerationRun
from tuner.generation.settings import GenerationSettings, InferenceSettings

SETTINGS = (InferenceSettings, GenerationSettings)  # the top-level keys this recipe reads


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    GenerationRun(cfg, force_chat=True).run()


if __name__ == "__main__":
    sys.exit(recipe_main())
