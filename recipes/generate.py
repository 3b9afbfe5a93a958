"""Generate text with a base model, a fine-tuned output folder, or a base model + LoRA adapter(s).

    tune run generate --config llama3_2/generation prompt="What is 3 times 4?"
    tune run generate --config llama3_2/generation adapter_dir=/tmp/tuner/llama3_2_1B/lora_single_device/step_100
    tune run generate --config llama3_2/generation chat=True
    tune run generate --config my_generation.yaml batch_size=8   # prompts with their own adapters, batched

The text streams to stdout as it is produced; progress and the speed (tokens/s) go to stderr.
Generation stops at the model's end-of-turn / EOS tokens or after ``max_new_tokens``.

Config keys:

- ``model``: the base model builder (``tuner.models.llama3_2.llama3_2_1b``; not a ``lora_*`` one).
- ``checkpointer``: where the weights come from; ``checkpoint_dir`` may be the base model or a
  fine-tuned run's ``output_dir/step_N`` (which holds the merged model).
- ``tokenizer``: the family's tokenizer builder; its chat format renders chat prompts.
- ``adapter_dir``: a LoRA/DoRA/VeRA/QLoRA adapter (PEFT format) merged into the base; a run's
  ``step_N`` folder (adapter in ``step_N/adapter``) works as well.
- ``adapters``: ``{name: folder}``, several adapters over one base; each prompt picks one with
  ``adapter: name`` (``base`` for none) and switching does not reload the base.
- ``adapter``: the default adapter (else ``adapter_dir``'s, else the base model).
- ``batch_size`` (1): with more, the prompts are answered that many at a time in one batch (one
  forward per token for the whole batch); each row uses its own ``adapter`` over the unmerged base
  (LoRA, rsLoRA, DoRA, VeRA, QLoRA, converted PiSSA), and greedy answers equal those of
  ``batch_size: 1``. The answers print when their batch is done; the speed is the batch's.
- ``prompt``: a string; torchtune's ``{system: ..., user: ...}``; or a list of strings /
  ``{user, system, adapter}`` / ``{messages, adapter}`` items, answered in turn.
- ``messages``: a whole conversation ``[{role, content}, ...]`` to continue.
- ``system``: system message for chat prompts (default none).
- ``chat_format`` (True): render prompts with the family's chat format and the assistant header;
  False: plain text completion (BOS + text).
- ``max_new_tokens`` (256), ``temperature`` (0 = greedy), ``top_k``, ``top_p``, ``seed``.
- ``chat`` (or ``interactive``): True reads user turns from stdin until EOF or ``exit``
  (``/adapter NAME`` switches adapters, ``/reset`` clears the history).
- ``output_file``: optional JSON-lines file with each answer's token ids, text and tokens/s.
- ``enable_kv_cache`` (True), ``device`` (cuda / cpu / auto), ``dtype`` (bf16 / fp32 / fp16).
"""

import sys

from omegaconf import DictConfig

from tuner import config
from tuner.generation.runner import GenerationRun
from tuner.generation.settings import GenerationSettings, InferenceSettings

SETTINGS = (InferenceSettings, GenerationSettings)  # the top-level keys this recipe reads


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    GenerationRun(cfg).run()


if __name__ == "__main__":
    sys.exit(recipe_main())
