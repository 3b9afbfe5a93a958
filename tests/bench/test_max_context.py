"""scripts/benchmark.py --max-context: the bisection (with a fake probe), reading a probe's outcome,
the goals, the refusals on CPU, and one real probe of a tiny QLoRA model on CPU (no cap)."""

from __future__ import annotations

import json

import pytest

from benchmarks import max_context as mc

TINY_QLORA = [
    "model._component_=tuner.models.llama3_1.qlora_llama3_1",
    "model.vocab_size=512",
    "model.num_layers=2",
    "model.num_heads=4",
    "model.num_kv_heads=2",
    "model.embed_dim=64",
    "model.intermediate_dim=128",
    "model.max_seq_len=256",  # over the probe's own max_seq_len=<seq_len>: overrides come last
]


def _fake(limit: int, log: list[int]):
    def probe(seq_len: int) -> mc.Probe:
        log.append(seq_len)
        return mc.Probe(seq_len, seq_len <= limit, tokens_per_s=1000.0 / seq_len if seq_len <= limit else None)

    return probe


@pytest.mark.parametrize("limit", [1024, 5000, 40_960, 100_000, 524_288])
def test_bisection_finds_the_longest_multiple_that_fits(limit):
    log: list[int] = []
    search = mc.longest_fitting(_fake(limit, log), 1024, 524_288, 1024)
    assert search.longest == limit // 1024 * 1024 and search.complete and search.stopped is None
    assert search.first_failing == (None if limit >= 524_288 else search.longest + 1024)
    assert len(log) <= 10 and len(set(log)) == len(log)  # log2(512) probes, none repeated
    assert search.best().seq_len == search.longest and search.best().fits


def test_the_goal_is_probed_first_and_nothing_fitting_is_said():
    log: list[int] = []
    search = mc.longest_fitting(_fake(70_000, log), 1024, 524_288, 1024, first=61_086)
    assert log[0] == 60 * 1024 and search.longest == 68 * 1024  # 61,086 rounded up: a fit proves the goal
    nothing = mc.longest_fitting(_fake(500, []), 1024, 8192, 1024)
    assert nothing.longest is None and nothing.first_failing == 1024 and nothing.complete
    assert nothing.best() is None and nothing.as_dict()["best"] is None


def test_a_failed_probe_or_the_time_budget_stops_with_the_bounds_known():
    def flaky(seq_len: int) -> mc.Probe:
        return mc.Probe(seq_len, None, error="exit code 1: boom") if seq_len > 8192 else mc.Probe(seq_len, True)

    search = mc.longest_fitting(flaky, 1024, 65_536, 1024, first=4096)
    assert not search.complete and search.longest == 4096 and search.first_failing is None
    assert search.stopped.startswith("probe at") and "boom" in search.stopped
    calls: list[int] = []
    timed = mc.longest_fitting(_fake(30_000, calls), 1024, 65_536, 1024, out_of_time=lambda: len(calls) >= 2)
    assert len(calls) == 2 and not timed.complete and timed.stopped == "out of time"
    assert timed.longest is not None and timed.first_failing is not None  # what the two probes proved
    with pytest.raises(ValueError, match="multiple"):
        mc.longest_fitting(flaky, 100, 65_536, 1024)


def test_goals_are_one_and_a_half_times_unsloths_figures():
    assert [mc.goal_tokens(c) for c in (16, 24, 48, 80, 100)] == [61_086, 117_712, 287_592, 343_000, None]
    fits = mc.Search(longest=65_536, first_failing=69_632, complete=True)
    assert mc.goal_met(fits, 61_086) is True and mc.goal_met(fits, 70_000) is False
    assert mc.goal_met(mc.Search(longest=None, first_failing=None, complete=False), 61_086) is None
    assert mc.goal_met(fits, None) is None


def test_a_probes_outcome_is_read_from_its_exit_code_and_output():
    line = json.dumps({"tokens_per_s_median": 900.5, "peak_alloc_gib": 15.2, "host_peak_rss_gib": 40.0})
    ok = mc.read_probe(65_536, 0, "[tuner] note\n" + line + "\n", 12.0)
    assert ok.fits and ok.tokens_per_s == 900.5 and ok.peak_alloc_gib == 15.2 and ok.host_peak_rss_gib == 40.0
    oom = mc.read_probe(65_536, 1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 5.0)
    assert oom.fits is False and oom.error == "out of memory"
    other = mc.read_probe(65_536, 1, "Traceback\nKeyError: 'x'\n", 5.0)
    assert other.fits is None and "KeyError" in other.error


@pytest.mark.parametrize(
    "args,message",
    [
        (["--max-context", "16,24"], "--max-context caps GPU memory; on CPU nothing would be capped"),
        (["--memory-cap-gib", "8"], "--memory-cap-gib 8 caps GPU memory; on cpu there is none to cap"),
        (["--max-context", "16GB"], "are not numbers"),
    ],
)
def test_memory_caps_on_cpu_are_refused_in_one_line(args, message, capsys, bench):
    code = bench.main(["--workload", "qlora_8b_r32_all", "--device", "cpu", "--steps", "2", *args])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0] and "Fix:" in lines[0]


def test_one_real_probe_trains_the_long_context_workload_on_cpu():
    """A fresh process runs unsloth's setup (tiny shape, no cap): it fits, with tokens/s and host memory."""
    argv = mc.probe_command("qlora_8b_r32_all", 64, 0, 1, TINY_QLORA, device="cpu")
    assert argv.index("model.max_seq_len=64") < argv.index("model.max_seq_len=256")  # the user's wins
    probe = mc.run_probe(argv, 64, timeout=300)
    assert probe.fits is True, probe.error
    assert probe.tokens_per_s > 0 and probe.host_peak_rss_gib > 0.1 and probe.peak_alloc_gib is None
