"""What `tune run eval` does: load the model (or base + adapter), score the dataset (mean token
loss and perplexity) and, with ``tasks``, run lm-evaluation-harness tasks. See recipes/eval.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from tuner.config.settings import read_settings
from tuner.errors import ConfigError
from tuner.evaluation.lm_eval_bridge import import_lm_eval, make_lm_eval_model, run_lm_eval
from tuner.evaluation.perplexity import build_eval_dataloader, evaluate_loss
from tuner.generation.loading import load_inference_model
from tuner.generation.settings import EvalSettings, InferenceSettings


def _tasks(options: EvalSettings) -> list[str]:
    node = options.tasks
    if node is None:
        return []
    if isinstance(node, str):
        return [t.strip() for t in node.split(",") if t.strip()]
    if isinstance(node, (list, ListConfig)):
        return [str(t) for t in node]
    raise ConfigError(
        f"tasks must be a list of lm-eval task names, got {node!r}", fix="write tasks: [hellaswag, arc_easy]"
    )


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured; returns ``{"loss", "perplexity", "tokens"}`` (when a dataset is
    given) plus ``{"tasks": lm-eval results}`` (when tasks are given)."""
    settings, options = read_settings(cfg, InferenceSettings, EvalSettings)
    tasks = _tasks(options)
    if options.dataset is None and not tasks:
        raise ConfigError(
            "nothing to evaluate: no dataset and no tasks", fix="add a dataset node, or tasks: [task names]"
        )
    if tasks:
        import_lm_eval()  # fail before loading the model
    loaded = load_inference_model(settings)
    result: dict[str, Any] = {}
    if options.dataset is not None:
        loader = build_eval_dataloader(options.dataset, loaded.tokenizer, options.batch_size, loaded.device)
        result.update(evaluate_loss(loaded.model, loader, options.max_batches, loaded.device))
    if tasks:
        lm = make_lm_eval_model(
            loaded.model, loaded.tokenizer, max_gen_toks=options.max_gen_toks, max_seq_len=options.max_seq_length
        )
        limit = options.limit
        if limit is not None:  # a count (the harness wants an int) or a fraction of each task
            limit = int(limit) if limit >= 1 and float(limit).is_integer() else float(limit)
        result["tasks"] = run_lm_eval(
            lm, tasks, num_fewshot=options.num_fewshot, limit=limit, include_path=options.include_path
        )
    if options.output_file is not None:
        out = Path(str(options.output_file)).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
