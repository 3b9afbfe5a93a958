"""`setup_torch_profiler`: the ``profiler:`` config section -> a torch profiler (torchtune's function).

A recipe wraps its steps in the returned profiler and calls ``profiler.step()`` after each one;
when ``enabled`` is false it gets a `DummyProfiler` (the same calls, doing nothing). Traces of each
active window go to ``output_dir/iteration_<step>/``: a TensorBoard trace, the key averages table,
and with ``profile_memory`` on CUDA a memory timeline and snapshot.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from tuner.training.seed import world_size_and_rank

log = logging.getLogger(__name__)

PROFILER_KEY = "profiler"
DEFAULT_PROFILER_ACTIVITIES = {
    torch.profiler.ProfilerActivity.CPU,
    torch.profiler.ProfilerActivity.CUDA,
    torch.profiler.ProfilerActivity.XPU,
}
DEFAULT_SCHEDULE: dict = {"wait_steps": 5, "warmup_steps": 5, "active_steps": 2, "num_cycles": 1}
DEFAULT_TRACE_OPTS: dict = {"profile_memory": False, "with_stack": False, "record_shapes": True, "with_flops": False}
DEFAULT_PROFILE_DIR: str = "profiler_output"


def _warn(msg: str) -> None:
    if world_size_and_rank()[1] == 0:
        log.warning(msg)


def trace_handler(
    prof: torch.profiler.profile, output_dir: str, metric: str = "self_cuda_time_total", row_limit: int = 25
) -> None:
    """Write one active window's results to ``output_dir/iteration_<step>/`` (every rank its own files)."""
    world_size, rank = world_size_and_rank()
    trace_dir = os.path.join(output_dir, f"iteration_{prof.step_num}")
    os.makedirs(trace_dir, exist_ok=True)
    torch.profiler.tensorboard_trace_handler(trace_dir, worker_name=f"rank{rank}", use_gzip=True)(prof)
    if prof.profile_memory and torch.cuda.is_available() and rank == 0:
        try:
            prof.export_memory_timeline(f"{trace_dir}/rank{rank}_memory-timeline.html")
        except Exception as e:  # needs optional plotting packages; the snapshot below does not
            log.warning(f"failed to export the memory timeline: {e}")
        torch.cuda.memory._dump_snapshot(f"{trace_dir}/rank{rank}_memory_snapshot.pickle")
    if prof.with_stack:
        prof.export_stacks(f"{trace_dir}/rank{rank}_stacks.txt", metric=metric)
    table = prof.key_averages(group_by_input_shape=prof.record_shapes, group_by_stack_n=5).table(
        sort_by=metric, row_limit=row_limit
    )
    Path(f"{trace_dir}/rank{rank}_key_averages.txt").write_text(str(table) + "\n")
    if world_size > 1:
        torch.distributed.barrier()


class DummyProfiler:
    """A profiler that does nothing (``profiler.enabled: false``): context manager, start, stop, step."""

    def __enter__(self) -> "DummyProfiler":
        return self

    def __exit__(self, *args: object) -> None:
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
    profile_memory: bool = DEFAULT_TRACE_OPTS["profile_memory"],
    with_stack: bool = DEFAULT_TRACE_OPTS["with_stack"],
    record_shapes: bool = DEFAULT_TRACE_OPTS["record_shapes"],
    with_flops: bool = DEFAULT_TRACE_OPTS["with_flops"],
    wait_steps: Optional[int] = None,
    warmup_steps: Optional[int] = None,
    active_steps: Optional[int] = None,
    num_cycles: Optional[int] = None,
    output_dir: Optional[str] = None,
) -> tuple[torch.profiler.profile | DummyProfiler, DictConfig]:
    """(profiler, the settings it uses with the defaults filled in).

    Activities: ``cpu``/``cuda``/``xpu`` (all three when none is on). Schedule: wait, warmup and
    active steps, repeated ``num_cycles`` times (DEFAULT_SCHEDULE for the keys not given).
    ``profile_memory`` turns ``with_stack`` and ``record_shapes`` on (the memory export needs them).
    """
    if not enabled:
        return DummyProfiler(), DictConfig({"enabled": False})
    activities = [
        a
        for on, a in (
            (cpu, torch.profiler.ProfilerActivity.CPU),
            (cuda, torch.profiler.ProfilerActivity.CUDA),
            (xpu, torch.profiler.ProfilerActivity.XPU),
        )
        if on
    ]
    if not activities:
        _warn("profiler: no activities given, profiling CPU, CUDA and XPU")
        activities, cpu, cuda, xpu = DEFAULT_PROFILER_ACTIVITIES, True, True, True
    given = {
        "wait_steps": wait_steps,
        "warmup_steps": warmup_steps,
        "active_steps": active_steps,
        "num_cycles": num_cycles,
    }
    schedule_args = {k: DEFAULT_SCHEDULE[k] if v is None else v for k, v in given.items()}
    missing = [k for k, v in given.items() if v is None]
    if missing:
        _warn(
            f"profiler: {', '.join(missing)} not given, using " + ", ".join(f"{k}={schedule_args[k]}" for k in missing)
        )
    schedule = torch.profiler.schedule(
        wait=schedule_args["wait_steps"],
        warmup=schedule_args["warmup_steps"],
        active=schedule_args["active_steps"],
        repeat=schedule_args["num_cycles"],
    )
    with_stack = with_stack or profile_memory
    record_shapes = record_shapes or profile_memory
    experimental_config = torch._C._profiler._ExperimentalConfig(verbose=True) if with_stack else None
    output_dir = str(output_dir or DEFAULT_PROFILE_DIR)
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    profiler = torch.profiler.profile(
        activities=activities,
        profile_memory=profile_memory,
        with_stack=with_stack,
        record_shapes=record_shapes,
        with_flops=with_flops,
        schedule=schedule,
        experimental_config=experimental_config,
        on_trace_ready=partial(trace_handler, output_dir=output_dir),
    )
    settings = DictConfig(
        {
            "enabled": enabled,
            "output_dir": output_dir,
            "cpu": cpu,
            "cuda": cuda,
            "xpu": xpu,
            "profile_memory": profile_memory,
            "with_stack": with_stack,
            "record_shapes": record_shapes,
            "with_flops": with_flops,
            **schedule_args,
        }
    )
    return profiler, settings
