"""What `tune run generate` does: load the model (with adapters), then answer the configured
prompts, one at a time streaming the text as it is produced, or ``batch_size`` at a time in one
batch whose rows use their own adapters over the unmerged base; or chat interactively. See
recipes/generate.py for the config keys."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, TextIO

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from tuner.config.settings import read_settings
from tuner.errors import ConfigError, UsageError
from tuner.generation.adapters import BASE_NAME
from tuner.generation.batch import generate_batch
from tuner.generation.loading import InferenceModel, default_adapter, load_inference_model
from tuner.generation.settings import GenerationSettings, InferenceSettings
from tuner.generation.text import GenerationResult, generate_text, prompt_tokens

EXIT_WORDS = ("exit", "quit", "/exit", "/quit")


@dataclass
class PromptSpec:
    """One prompt to answer: plain text or a conversation, with its system message and adapter."""

    prompt: Optional[str] = None
    messages: Optional[list[dict[str, Any]]] = None
    system: Optional[str] = None
    adapter: Optional[str] = None


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def prompt_specs(settings: GenerationSettings) -> list[PromptSpec]:
    """The prompts of the config.

    ``prompt`` is a string, torchtune's ``{system, user}``, or a list of those (list items may also
    be ``{prompt|user, system, adapter}`` or ``{messages, adapter}``); ``messages`` is one whole
    conversation. ``system`` and ``adapter`` at the top level are the defaults.
    """
    system = settings.system
    adapter = None  # the default adapter (resolved when the model is loaded)
    node, messages = _plain(settings.prompt), _plain(settings.messages)
    specs: list[PromptSpec] = []
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ConfigError(
                "messages must be a list of {role, content}", fix="write messages: [{role: user, content: Hi}]"
            )
        specs.append(PromptSpec(messages=messages, system=system, adapter=adapter))
    items = node if isinstance(node, list) else ([] if node is None else [node])
    for i, item in enumerate(items):
        if isinstance(item, str):
            specs.append(PromptSpec(prompt=item, system=system, adapter=adapter))
            continue
        if not isinstance(item, dict):
            raise ConfigError(f"prompt[{i}] is {item!r}", fix="give a string or {user: ..., system: ..., adapter: ...}")
        unknown = set(item) - {"prompt", "user", "system", "adapter", "messages"}
        if unknown:
            raise ConfigError(
                f"prompt[{i}] has unknown key(s) {sorted(unknown)}",
                fix="use user (or prompt), system, adapter, messages",
            )
        text = item.get("user", item.get("prompt"))
        if text is None and item.get("messages") is None:
            raise ConfigError(f"prompt[{i}] has no text", fix="give it a user: (or prompt:) or messages: key")
        specs.append(
            PromptSpec(
                prompt=text,
                messages=item.get("messages"),
                system=item.get("system", system),
                adapter=item.get("adapter", adapter),
            )
        )
    return specs


class GenerationRun:
    """The generate recipe's work; `run` answers the prompts or starts the chat loop."""

    def __init__(
        self,
        cfg: DictConfig,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        force_chat: bool = False,
    ) -> None:
        self.settings: InferenceSettings
        self.settings, self.options = read_settings(cfg, InferenceSettings, GenerationSettings)
        o: GenerationSettings = self.options
        self.cfg = cfg
        self.stdin, self.stdout, self.stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
        self.chat_format = o.chat_format
        self.max_new_tokens = o.max_new_tokens
        self.temperature = o.temperature
        self.top_k, self.top_p = o.top_k, o.top_p
        self.use_cache = o.enable_kv_cache
        self.batch_size = o.batch_size
        self.interactive = o.chat or o.interactive or force_chat
        self.specs = [] if force_chat else prompt_specs(o)
        if not self.specs and not self.interactive:
            raise ConfigError(
                "nothing to generate: no prompt, no messages and chat is off",
                fix="set prompt='your question', or chat=True for an interactive session",
            )
        self.loaded: InferenceModel | None = None
        self.rng: torch.Generator | None = None
        self.results: list[GenerationResult] = []

    def setup(self) -> None:
        self.loaded = load_inference_model(self.settings)
        seed = self.settings.seed
        self.rng = torch.Generator(device=self.loaded.device)
        self.rng.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
        switcher = self.loaded.switcher
        names = (
            ", ".join(self.loaded.describe(n).removeprefix("adapter ") for n in switcher.adapters)
            if switcher
            else "none"
        )
        dtype = str(self.loaded.dtype).replace("torch.", "")
        self._info(
            f"model {self.loaded.checkpointer.checkpoint_dir} loaded on {self.loaded.device} in {dtype} "
            f"({self.loaded.dtype_source}); adapters: {names}"
        )

    def _info(self, line: str) -> None:
        print(f"[tuner] {line}", file=self.stderr, flush=True)

    def _write(self, piece: str) -> None:
        self.stdout.write(piece)
        self.stdout.flush()

    def generate(self, tokens: list[int], adapter: Optional[str]) -> GenerationResult:
        """Stream one answer to ``tokens`` with ``adapter`` active; record and return it."""
        assert self.loaded is not None
        self.loaded.use_adapter(adapter)
        result = generate_text(
            self.loaded.model,
            self.loaded.tokenizer,
            tokens,
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            rng=self.rng,
            on_text=self._write,
            use_cache=self.use_cache,
        )
        self._write("\n")
        result.adapter = self.loaded.switcher.active if self.loaded.switcher else None
        self._info(result.summary())
        self.results.append(result)
        return result

    def _tokens(self, spec: PromptSpec) -> list[int]:
        assert self.loaded is not None
        return prompt_tokens(
            self.loaded.tokenizer, spec.prompt, messages=spec.messages, system=spec.system, chat_format=self.chat_format
        )

    @staticmethod
    def _label(spec: PromptSpec) -> str:
        return spec.prompt if spec.prompt is not None else (spec.messages or [{}])[-1].get("content", "")

    def answer_prompts(self) -> None:
        assert self.loaded is not None
        default = default_adapter(self.settings, self.loaded.switcher.names if self.loaded.switcher else [])
        if self.batch_size > 1:
            for start in range(0, len(self.specs), self.batch_size):
                self.answer_batch(self.specs[start : start + self.batch_size], default)
            return
        for spec in self.specs:
            adapter = spec.adapter if spec.adapter is not None else default
            self._info(f"[{self.loaded.describe(adapter)}] {self._label(spec)}")
            self.generate(self._tokens(spec), adapter)

    def answer_batch(self, specs: list[PromptSpec], default: Optional[str]) -> list[GenerationResult]:
        """Answer ``specs`` in one batch, each with its adapter over the unmerged base; print each
        answer when the batch is done."""
        assert self.loaded is not None
        loaded = self.loaded
        tokens = [self._tokens(spec) for spec in specs]
        names = [spec.adapter if spec.adapter is not None else default for spec in specs]
        mixed = loaded.mixed_adapters()
        if mixed is None:
            for name in names:
                loaded.use_adapter(name)  # the error for an adapter name with no adapters loaded
        room = loaded.model.max_seq_len - max(len(t) for t in tokens)
        if room <= 0:
            raise UsageError(
                f"a prompt has {max(len(t) for t in tokens)} tokens, the model's max_seq_len is "
                f"{loaded.model.max_seq_len}",
                fix="shorten the prompt",
            )
        stops = list(loaded.tokenizer.stop_tokens)
        start = time.perf_counter()
        answers = generate_batch(
            loaded.model,
            tokens,
            min(self.max_new_tokens, room),
            adapters=mixed,
            adapter_names=names,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            stop_tokens=stops,
            rng=self.rng,
            use_cache=self.use_cache,
        )
        seconds = time.perf_counter() - start
        results = []
        for spec, prompt, name, out in zip(specs, tokens, names, answers):
            stopped = bool(out) and out[-1] in stops
            text = loaded.tokenizer.decode(out[:-1] if stopped else out)
            self._info(f"[{loaded.describe(name)}] {self._label(spec)}")
            self._write(text + "\n")
            adapter = None if name in (None, BASE_NAME) else name
            result = GenerationResult(prompt, out, text, stopped, seconds, float("nan"), adapter=adapter)  # batch time
            result.extra["batch_size"] = len(specs)
            results.append(result)
        total = sum(len(r.tokens) for r in results)
        self._info(
            f"{len(specs)} prompts in one batch: {total} tokens in {seconds:.2f} s "
            f"({total / seconds if seconds > 0 else 0.0:.1f} tokens/s)"
        )
        self.results.extend(results)
        return results

    def chat(self) -> None:
        """Read user turns from stdin until EOF or "exit"; ``/adapter NAME`` switches adapters,
        ``/reset`` clears the conversation."""
        assert self.loaded is not None
        system = self.options.system
        adapter = default_adapter(self.settings, self.loaded.switcher.names if self.loaded.switcher else [])
        history: list[dict[str, str]] = []
        self._info(
            "chat: type a message; /adapter NAME switches adapters, /reset clears the history, exit (or EOF) ends"
        )
        while True:
            self.stderr.write("> ")
            self.stderr.flush()
            line = self.stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text.lower() in EXIT_WORDS:
                break
            if text == "/reset":
                history = []
                continue
            if text.startswith("/adapter"):
                adapter = text[len("/adapter") :].strip() or None
                self.loaded.use_adapter(adapter)
                self._info(f"adapter: {adapter or 'base'}")
                continue
            if self.chat_format:
                history.append({"role": "user", "content": text})
                tokens = prompt_tokens(self.loaded.tokenizer, messages=history, system=system)
            else:
                tokens = prompt_tokens(self.loaded.tokenizer, text, chat_format=False)
            result = self.generate(tokens, adapter)
            if self.chat_format:
                history.append({"role": "assistant", "content": result.text.strip()})

    def write_results(self) -> None:
        path = self.options.output_file
        if path is None:
            return
        out = Path(str(path)).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for r in self.results:
                f.write(
                    json.dumps(
                        {
                            "adapter": r.adapter,
                            "prompt_tokens": r.prompt_tokens,
                            "tokens": r.tokens,
                            "text": r.text,
                            "stopped": r.stopped,
                            "tokens_per_second": r.tokens_per_second,
                        }
                    )
                    + "\n"
                )

    def run(self) -> list[GenerationResult]:
        self.setup()
        try:
            if self.specs:
                self.answer_prompts()
            if self.interactive:
                self.chat()
        finally:
            self.write_results()
        return self.results
