"""Evaluation: mean token loss / perplexity on a dataset, and lm-evaluation-harness tasks."""

from tuner.evaluation.lm_eval_bridge import TunerLMScorer, import_lm_eval, make_lm_eval_model, run_lm_eval
from tuner.evaluation.perplexity import build_eval_dataloader, evaluate_loss
from tuner.evaluation.runner import run_evaluation

__all__ = [
    "TunerLMScorer",
    "build_eval_dataloader",
    "evaluate_loss",
    "import_lm_eval",
    "make_lm_eval_model",
    "run_evaluation",
    "run_lm_eval",
]
