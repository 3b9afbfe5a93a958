"""torch.profiler for training runs, configured as torchtune configures it (the ``profiler`` node).

``setup_torch_profiler`` takes torchtune's keys and returns ``(profiler, settings)``: a
``torch.profiler.profile`` (or a `DummyProfiler` when disabled) whose schedule the trainer steps
once per optimizer step. At the end of each active window it writes, under
``output_dir/iteration_<step>/``, a Chrome trace (``*.pt.trace.json.gz``: open it in
https://ui.perfetto.dev, chrome://tracing, or TensorBoard's profiler plugin with ``--logdir
output_dir``), the table of operator averages (``rank<r>_key_averages.txt``), the stacks when
``with_stack`` and, on CUDA with ``profile_memory``, the memory timeline and snapshot.
"""
from __future__ import annotations

import datetime
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

DEFAULT_SCHEDULE: dict[str, int] = {"wait_steps": 5, "warmup_steps": 5, "active_steps": 2, "num_cycles": 1}
DEFAULT_PROFILE_DIR = "profiler_output"


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def trace_handler(prof: torch.profiler.profile, output_dir: str, metric: str = "self_cpu_time_total",
                  row_limit: int = 25) -> None:
    """Write one profiling window's artifacts into ``output_dir/iteration_<step>/`` (see the module docstring)."""
    rank, world_size = _rank_and_world()
    folder = Path(output_dir) / f"iteration_{prof.step_num}"
    folder.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    now = datetime.datetime.now()
    worker = f"r{rank}-{now:%Y-%m-%d-%H-%M}"
    # TensorBoard's plugin cannot read prof.export_chrome_trace's output; this handler's it can, and Perfetto reads both.
    torch.profiler.tensorboard_trace_handler(str(folder), worker_name=worker, use_gzip=True)(prof)
    if prof.profile_memory and torch.cuda.is_available() and rank == 0:
        try:
            prof.export_memory_timeline(str(folder / f"rank{rank}_memory-timeline.html"))
        except Exception as e:  # the timeline export is known to fail on some traces; the trace is kept
            log.warning("could not export the memory timeline: %s", e)
        torch.cuda.memory._dump_snapshot(str(folder / f"rank{rank}_memory_snapshot.pickle"))
    if prof.with_stack:
        prof.export_stacks(str(folder / f"rank{rank}_stacks.txt"), metric=metric)
    table = prof.key_averages(group_by_input_shape=prof.record_shapes, group_by_stack_n=5).table(
        sort_by="self_cuda_time_total" if torch.cuda.is_available() else metric, row_limit=row_limit)
    (folder / f"rank{rank}_key_averages.txt").write_text(table + "\n")
    if rank == 0:
        print(f"[tuner] profiler: wrote step {prof.step_num}'s trace to {folder} in {time.monotonic() - begin:.1f} s", flush=True)
    if world_size > 1:
        torch.distributed.barrier()


class DummyProfiler:
    """Stands in for ``torch.profiler.profile`` when profiling is off: every method does nothing."""

    def __enter__(self) -> "DummyProfiler":
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def step(self) -> None:
        pass


def setup_torch_profiler(
    enabled: bool = False,
    cpu: bool = True,
    cuda: bool = True,
    xpu: bool = True,
    profile_memory: bool = False,
    with_stack: bool = False,
    record_shapes: bool = True,
    with_flops: bool = False,
    wait_steps: int | None = None,
    warmup_steps: int | None = None,
    active_steps: int | None = None,
    num_cycles: int | None = None,
    output_dir: str | None = None,
) -> tuple[torch.profiler.profile | DummyProfiler, DictConfig]:
    """torchtune's ``setup_torch_profiler``: ``(profiler, settings actually used)``.

    Activities a machine lacks (``cuda`` without CUDA, ``xpu`` without XPU) are left out rather
    than failing. Missing schedule keys take ``DEFAULT_SCHEDULE``'s values; ``profile_memory``
    turns on ``with_stack`` and ``record_shapes``, which it needs. The caller calls ``start()``,
    ``step()`` once per optimizer step, and ``stop()``.
    """
    if not enabled:
        return DummyProfiler(), DictConfig({"enabled": False})
    wanted = {"cpu": cpu, "cuda": cuda, "xpu": xpu}
    available = {"cpu": True, "cuda": torch.cuda.is_available(),
                 "xpu": hasattr(torch, "xpu") and torch.xpu.is_available()}
    activity = {"cpu": torch.profiler.ProfilerActivity.CPU, "cuda": torch.profiler.ProfilerActivity.CUDA,
                "xpu": getattr(torch.profiler.ProfilerActivity, "XPU", None)}
    if not any(wanted.values()):
        wanted = {"cpu": True, "cuda": True, "xpu": True}  # torchtune's default when none is asked for
    used = {k: bool(wanted[k] and available[k] and activity[k] is not None) for k in wanted}
    if not any(used.values()):
        used["cpu"] = True
    given = {"wait_steps": wait_steps, "warmup_steps": warmup_steps, "active_steps": active_steps, "num_cycles": num_cycles}
    schedule_args = {k: int(DEFAULT_SCHEDULE[k] if v is None else v) for k, v in given.items()}
    with_stack = bool(with_stack or profile_memory)
    record_shapes = bool(record_shapes or profile_memory)
    out = Path(str(output_dir) if output_dir is not None else DEFAULT_PROFILE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    experimental = None
    if with_stack:  # needed to export stacks (pytorch/pytorch#100253)
        from torch._C._profiler import _ExperimentalConfig

        experimental = _ExperimentalConfig(verbose=True)
    profiler = torch.profiler.profile(
        activities=[activity[k] for k, on in used.items() if on],
        profile_memory=bool(profile_memory),
        with_stack=with_stack,
        record_shapes=record_shapes,
        with_flops=bool(with_flops),
        schedule=torch.profiler.schedule(wait=schedule_args["wait_steps"], warmup=schedule_args["warmup_steps"],
                                         active=schedule_args["active_steps"], repeat=schedule_args["num_cycles"]),
        experimental_config=experimental,
        on_trace_ready=partial(trace_handler, output_dir=str(out)),
    )
    settings = DictConfig({"enabled": True, "output_dir": str(out), **used, "profile_memory": bool(profile_memory),
                           "with_stack": with_stack, "record_shapes": record_shapes, "with_flops": bool(with_flops),
                           **schedule_args})
    return profiler, settings
