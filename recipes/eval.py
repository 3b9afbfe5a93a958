"""Evaluate a model, a fine-tuned output folder, or a base model + adapter.

    tune run eval --config llama3_2/evaluation
    tune run eval --config llama3_2/evaluation adapter_dir=/tmp/tuner/llama3_2_1B/lora_single_device/step_100
    tune run eval --config llama3_2/evaluation tasks=[hellaswag] limit=100    # needs: pip install lm-eval
    tune run eleuther_eval --config eleuther_evaluation                       # torchtune's names for both

Prints one JSON object: ``{"loss": mean next-token loss, "perplexity": exp(loss), "tokens": n}``
over the dataset's trained-on tokens (the labels a fine-tune would learn), plus ``"tasks"`` with
lm-evaluation-harness metrics when ``tasks`` is set.

Config keys:

- ``model``, ``checkpointer``, ``tokenizer``, ``adapter_dir``, ``adapters`` + ``adapter``,
  ``device``, ``dtype``, ``seed``: as in the generate recipe (base builder, adapters merged in).
- ``dataset``: a dataset builder node (or a list of them), e.g. ``tuner.datasets.alpaca_dataset``
  with ``source: json`` and ``data_files``; ``batch_size`` (1), ``max_batches`` (all).
- ``tasks``: lm-eval task names (optional; needs the ``lm-eval`` package); ``num_fewshot``,
  ``limit`` (examples per task, or a fraction), ``max_gen_toks`` (256) for generation tasks,
  ``include_path`` (a folder of your own task YAMLs, e.g. over local data files),
  ``max_seq_length`` (the longest context the harness gives the model; default: the model's).
- ``output_file``: optional path for the JSON result.
"""

import json
import sys

from omegaconf import DictConfig

from tuner import config
from tuner.evaluation import run_evaluation
from tuner.generation.settings import EvalSettings, InferenceSettings

SETTINGS = (InferenceSettings, EvalSettings)  # the top-level keys this recipe reads


@config.parse
def recipe_main(cfg: DictConfig) -> None:
    print(json.dumps(run_evaluation(cfg), default=str), flush=True)


if __name__ == "__main__":
    sys.exit(recipe_main())
