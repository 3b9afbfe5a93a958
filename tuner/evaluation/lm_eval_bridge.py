"""A bridge to EleutherAI's lm-evaluation-harness: a tuner model as an ``lm_eval`` ``LM``.

``lm_eval`` is an optional dependency (``pip install lm-eval``) and is imported only when tasks
are run. The scoring itself lives in `TunerLMScorer`, a plain class, so it works (and is tested)
without the harness; `make_lm_eval_model` mixes it into ``lm_eval.api.model.LM``.

- ``loglikelihood``: log P(continuation | context) summed over the continuation's tokens, and
  whether greedy decoding would have produced exactly those tokens (as the harness's HF model:
  the context's trailing spaces move to the continuation; the context is cut from the left to fit).
- ``loglikelihood_rolling``: the log-likelihood of a whole text, in windows of ``max_seq_len``.
- ``generate_until``: `tuner.generation` from the context, stopped at the ``until`` strings, the
  model's end-of-turn tokens or ``max_gen_toks``.

Requests are scored one at a time (simple and exact; a batched version would pad).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F

from tuner.errors import TunerError
from tuner.generation.text import IncrementalDecoder
from tuner.models.decoding import stream

LM_EVAL_HINT = "pip install lm-eval"


def import_lm_eval() -> Any:
    """The ``lm_eval`` module, or a TunerError saying how to install it."""
    try:
        import lm_eval  # noqa: F401
        import lm_eval.api.model  # noqa: F401
    except ImportError as e:
        raise TunerError(
            f"evaluating tasks needs lm-evaluation-harness, which is not installed ({e})",
            fix=f"{LM_EVAL_HINT} (or leave out tasks: to compute the dataset's loss and perplexity only)",
        ) from None
    return lm_eval


def _args(request: Any) -> tuple:
    return tuple(request.args) if hasattr(request, "args") else tuple(request)


class TunerLMScorer:
    """Scores lm-eval requests with a tuner decoder and tokenizer (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        max_seq_len: Optional[int] = None,
        max_gen_toks: int = 256,
        add_bos: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_seq_len or getattr(model, "max_seq_len", 2048))
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos = add_bos
        self._device = next(model.parameters()).device

    # -- tokens --------------------------------------------------------------------------------
    def _encode(self, text: str, bos: bool) -> list[int]:
        return self.tokenizer.encode(text, add_bos=bos and self.add_bos, add_eos=False)

    def _prefix_token(self) -> int:
        bos = getattr(self.tokenizer, "bos_id", None)
        return int(bos if bos is not None else self.tokenizer.eos_id)

    def _context_continuation(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if context == "":
            return [self._prefix_token()], self._encode(continuation, bos=False)
        whole = self._encode(context + continuation, bos=True)
        ctx = self._encode(context, bos=True)
        return whole[: len(ctx)], whole[len(ctx) :]

    @torch.no_grad()
    def _logprobs(self, context: list[int], targets: list[int]) -> tuple[float, bool]:
        """log P(targets | context) and whether every target is the argmax."""
        seq = (context + targets)[-(self.max_length + 1) :]
        inp = torch.tensor([seq[:-1]], dtype=torch.long, device=self._device)
        logits = self.model(inp)[0, -len(targets) :].float()
        logp = F.log_softmax(logits, dim=-1)
        tgt = torch.tensor(targets, dtype=torch.long, device=self._device)
        total = float(logp.gather(-1, tgt[:, None]).sum())
        greedy = bool((logits.argmax(-1) == tgt).all())
        return total, greedy

    # -- the LM interface ----------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out = []
        for req in requests:
            context, continuation = _args(req)[:2]
            ctx, cont = self._context_continuation(context, continuation)
            if not cont:
                out.append((0.0, True))
                continue
            out.append(self._logprobs(ctx, cont[-self.max_length :]))
        return out

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in requests:
            text = _args(req)[0]
            seq = [self._prefix_token()] + self._encode(text, bos=False)
            total, pos = 0.0, 1
            while pos < len(seq):
                end = min(pos + self.max_length, len(seq))
                start = max(0, end - self.max_length - 1)
                lp, _ = self._logprobs(seq[start:pos], seq[pos:end])
                total += lp
                pos = end
            out.append(total)
        return out

    @torch.no_grad()
    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = _args(req)[:2]
            kwargs = dict(gen_kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0
            tokens = self._encode(context, bos=True)[-(self.max_length - 1) :]
            max_new = max(1, min(max_new, self.max_length - len(tokens)))
            stops = list(self.tokenizer.stop_tokens)
            decoder = IncrementalDecoder(self.tokenizer)
            for nxt in stream(self.model, tokens, max_new, temperature=temperature, stop_tokens=stops):
                token = int(nxt[0])
                if token in stops:
                    break
                decoder.push(token)
                if any(u and u in decoder.text for u in until):
                    break
            decoder.flush()
            text = decoder.text
            for u in until:
                if u:
                    text = text.split(u, 1)[0]
            out.append(text)
        return out


def make_lm_eval_model(model: torch.nn.Module, tokenizer: Any, **kwargs: Any) -> Any:
    """An ``lm_eval.api.model.LM`` over a tuner model (needs ``pip install lm-eval``)."""
    lm_eval = import_lm_eval()
    base = lm_eval.api.model.LM

    class TunerLM(TunerLMScorer, base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            TunerLMScorer.__init__(self, model, tokenizer, **kwargs)

    return TunerLM()


def run_lm_eval(
    lm: Any,
    tasks: Sequence[str],
    num_fewshot: Optional[int] = None,
    limit: Optional[float] = None,
    include_path: Optional[str] = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run harness ``tasks`` on ``lm``; returns the harness's ``results`` (per-task metrics).

    ``include_path``: a folder of extra task YAMLs (the harness's ``--include_path``), e.g. tasks
    over local data files. Checked with lm-eval 0.4.13.
    """
    lm_eval = import_lm_eval()
    if include_path is not None:
        from lm_eval.tasks import TaskManager

        kwargs["task_manager"] = TaskManager(include_path=str(include_path))
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, **kwargs)
    except (KeyError, ValueError) as e:
        raise TunerError(
            f"lm-eval could not run tasks {list(tasks)}: {e}",
            fix="check the task names with `lm_eval --tasks list`; tasks whose data must be downloaded need network "
            "access",
        ) from None
    return dict(out.get("results", {})) if out else {}
