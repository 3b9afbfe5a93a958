"""What `tune run eval` does: load the model (or base + adapter), score the dataset (mean token
loss and perplexity) and, with ``tasks``, run lm-evaluation-harness tasks. See recipes/eval.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from tuner.errors import ConfigError
from tuner.evaluation.lm_eval_bridge import import_lm_eval, make_lm_eval_model, run_lm_eval
from tuner.evaluation.perplexity import build_eval_dataloader, evaluate_loss
from tuner.generation.loading import LOADING_KEYS, cfg_get, check_keys, load_inference_model

EVAL_KEYS = LOADING_KEYS | {"dataset", "batch_size", "max_batches", "tasks", "num_fewshot", "limit", "max_gen_toks",
                            "include_path", "output_file", "max_seq_length"}


def _tasks(cfg: DictConfig) -> list[str]:
    node = cfg_get(cfg, "tasks")
    if node is None:
        return []
    if isinstance(node, str):
        return [t.strip() for t in node.split(",") if t.strip()]
    if isinstance(node, (list, ListConfig)):
        return [str(t) for t in node]
    raise ConfigError(f"tasks must be a list of lm-eval task names, got {node!r}", fix="write tasks: [hellaswag, arc_easy]")


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate as configured; returns ``{"loss", "perplexity", "tokens"}`` (when a dataset is
    given) plus ``{"tasks": lm-eval results}`` (when tasks are given)."""
    check_keys(cfg, EVAL_KEYS, "eval")
    tasks = _tasks(cfg)
    if cfg_get(cfg, "dataset") is None and not tasks:
        raise ConfigError("nothing to evaluate: no dataset and no tasks", fix="add a dataset node, or tasks: [task names]")
    if tasks:
        import_lm_eval()  # fail before loading the model
    loaded = load_inference_model(cfg)
    result: dict[str, Any] = {}
    if cfg_get(cfg, "dataset") is not None:
        loader = build_eval_dataloader(cfg.dataset, loaded.tokenizer, int(cfg_get(cfg, "batch_size", 1)), loaded.device)
        max_batches = cfg_get(cfg, "max_batches")
        result.update(evaluate_loss(loaded.model, loader, None if max_batches is None else int(max_batches), loaded.device))
    if tasks:
        max_len = cfg_get(cfg, "max_seq_length")  # torchtune's key: the longest context lm-eval may give
        lm = make_lm_eval_model(loaded.model, loaded.tokenizer, max_gen_toks=int(cfg_get(cfg, "max_gen_toks", 256)),
                                max_seq_len=None if max_len is None else int(max_len))
        limit = cfg_get(cfg, "limit")
        if limit is not None:  # a count (the harness wants an int) or a fraction of each task
            limit = int(limit) if float(limit) >= 1 and float(limit).is_integer() else float(limit)
        fewshot = cfg_get(cfg, "num_fewshot")
        result["tasks"] = run_lm_eval(lm, tasks, num_fewshot=None if fewshot is None else int(fewshot),
                                      limit=limit,
                                      include_path=cfg_get(cfg, "include_path"))
    path = cfg_get(cfg, "output_file")
    if path is not None:
        out = Path(str(path)).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
