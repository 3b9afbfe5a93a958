"""GPU idle-gap accounting of `benchmarks.trace` on a hand-made trace."""

from benchmarks.trace import idle_gaps, kernel_launchers, kernel_summary


def _x(cat, name, ts, dur, **args):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def _trace():
    # One step 0..1000 us. Kernels: 0-100, 100-200 (back to back), 500-600 (after a 300 us gap whose
    # kernel was launched from aten::mm while a sync ran), 650-700 (50 us gap, launched by aten::add).
    return [
        _x("user_annotation", "ProfilerStep#3", 0, 1000),
        _x("cpu_op", "Outer", 0, 1000),
        _x("cpu_op", "aten::mm", 400, 50, **{"Input Dims": [[8, 4], [4, 2]]}),
        _x("cpu_op", "aten::add", 620, 10),
        _x("cuda_runtime", "cudaStreamSynchronize", 210, 150),
        _x("cuda_runtime", "cudaLaunchKernel", 5, 1, correlation=1),
        _x("cuda_runtime", "cudaLaunchKernel", 6, 1, correlation=2),
        _x("cuda_runtime", "cudaLaunchKernel", 410, 5, correlation=3),
        _x("cuda_driver", "cuLaunchKernelEx", 625, 3, correlation=4),  # Triton launches go through the driver
        _x("kernel", "k_a", 0, 100, correlation=1),
        _x("kernel", "k_b", 100, 100, correlation=2),
        _x("kernel", "gemm", 500, 100, correlation=3),
        _x("kernel", "k_add", 650, 50, correlation=4),
    ]


def test_idle_gaps_blames_the_launching_op_and_syncs():
    out = idle_gaps(_trace(), min_gap_us=20)
    assert out["gaps"] == 2
    assert out["idle_in_gaps_ms"] == 0.35
    assert out["idle_ms"] == 0.65  # gaps + the 300 us after the last kernel
    blame = {name: ms for ms, name in out["idle_by_launching_op_ms"]}
    assert blame == {"sync aten::mm": 0.3, "aten::add": 0.05}
    assert out["largest_gaps"][0][:3] == [0.3, "sync aten::mm", "gemm"]


def test_idle_gaps_ignores_gaps_below_the_threshold():
    assert idle_gaps(_trace(), min_gap_us=60)["gaps"] == 1


def test_kernel_summary_sums_gpu_time_per_kernel():
    out = kernel_summary(_trace())
    assert out["steps_traced"] == 1 and out["kernel_launches"] == 4
    assert out["gpu_busy_ms"] == 0.4  # 0.35 ms, reported to 0.1 ms
    assert sorted(map(tuple, out["top_kernels_ms"])) == [
        (0.05, 1, "k_add"),
        (0.1, 1, "gemm"),
        (0.1, 1, "k_a"),
        (0.1, 1, "k_b"),
    ]


def test_kernel_launchers_names_the_op_and_shapes_behind_each_kernel():
    events = _trace()
    rows = kernel_launchers(events)
    assert [0.1, 1, "gemm", "aten::mm", "[[8, 4], [4, 2]]"] in rows and len(rows) == 4
    assert [0.05, 1, "k_add", "aten::add", ""] in rows
    assert [0.1, 1, "k_a", "Outer", ""] in rows  # launched inside no narrower op
    events.append(_x("kernel", "gemm", 800, 100, correlation=3))  # the same launch site again: summed
    assert kernel_launchers(events)[0] == [0.2, 2, "gemm", "aten::mm", "[[8, 4], [4, 2]]"]
