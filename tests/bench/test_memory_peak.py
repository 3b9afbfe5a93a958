"""Peak accounting of `benchmarks.memory_peak` on a hand-made allocator history."""

from benchmarks.memory_peak import peak_composition

GIB = 2**30


def _frames(*sites):
    return [{"filename": f, "line": line, "name": name} for f, line, name in sites]


def _alloc(addr, gib, *sites):
    return {"action": "alloc", "addr": addr, "size": int(gib * GIB), "frames": _frames(*sites)}


def _free(addr, gib, action="free_completed"):
    return {"action": action, "addr": addr, "size": int(gib * GIB), "frames": []}


WEIGHTS = ("/x/site-packages/torch/nn/modules/module.py", 10, "to"), ("/src/tuner/training/trainer.py", 5, "setup")
SAVED = ("/tmp/torchinductor_root/ab/cabc.py", 77, "call"), ("/x/torch/_dynamo/eval_frame.py", 1, "_fn")
GRAD = (("/x/torch/autograd/graph.py", 3, "_engine_run_backward"),)


def test_peak_is_the_highest_point_and_its_live_blocks_by_site():
    events = [
        _alloc(1, 2.0, *WEIGHTS),
        _alloc(2, 0.5, *SAVED),
        _alloc(3, 0.5, *SAVED),
        _alloc(4, 1.0, *GRAD),  # peak: 4.0 GiB
        _free(4, 1.0),
        _free(3, 0.5, "free_requested"),  # requested only: still allocated
        _alloc(5, 0.75, *GRAD),  # 3.75 GiB: below the peak
        _free(3, 0.5),
    ]
    out = peak_composition({"device_traces": [events], "segments": []})
    assert out["peak_recorded_gib"] == 4.0
    assert out["peak_event"] == 3
    sites = {site: (gib, n) for gib, n, site in out["at_peak_gib_by_site"]}
    assert sites == {
        "training/trainer.py:5 setup": (2.0, 1),  # the first frame in our code, not torch's
        "ab/cabc.py:77 call": (1.0, 2),  # inductor's generated code counts as ours
        "autograd/graph.py:3 _engine_run_backward": (1.0, 1),  # no frame of ours: the innermost
    }
    assert [row[0] for row in out["at_peak_gib_by_site"]] == [2.0, 1.0, 1.0]


def test_blocks_from_before_recording_are_reported_apart():
    events = [_alloc(1, 1.0, *WEIGHTS)]
    segments = [
        {
            "device": 0,
            "blocks": [
                {"size": int(1.0 * GIB), "state": "active_allocated"},
                {"size": int(0.5 * GIB), "state": "active_allocated"},
                {"size": int(2.0 * GIB), "state": "inactive"},
            ],
        }
    ]
    out = peak_composition({"device_traces": [events], "segments": segments})
    assert out["peak_recorded_gib"] == 1.0
    assert out["unrecorded_live_at_end_gib"] == 0.5


def test_no_history_gives_an_empty_answer():
    out = peak_composition({"device_traces": [], "segments": []})
    assert out["peak_recorded_gib"] == 0 and out["at_peak_gib_by_site"] == []
