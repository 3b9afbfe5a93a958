"""scripts/gpu_fp8.py: the quality runs of every plan train on identical batches and differ from the
bf16 run in one setting only, and the summary reads each run's curve gap against the bf16 run."""

from __future__ import annotations

import json

from tests.bench.conftest import load_script

gpu_fp8 = load_script("gpu_fp8")


def test_quality_runs_differ_from_the_bf16_run_in_one_setting():
    for plan in (plan for plan in gpu_fp8.PLANS.values() if plan["quality"]):
        runs = dict(plan["quality"])
        (base,) = [name for name in runs if name.endswith("_bf16")]  # an NF4 base or another model: its own
        reference = runs.pop(base)
        assert "dataset._component_=benchmarks.parity.learnable_dataset" in reference
        for name, args in runs.items():
            extra = args[len(reference) :]
            assert args[: len(reference)] == reference and extra, name
            # one setting: the seed (the noise reference) or the FP8 recipe (base_dtype and its fp8_ options);
            # an FP8 run with another seed is one setting from the bf16 run of that seed
            seed = extra[0] if extra[0].startswith("seed=") else None
            if seed and len(extra) > 1:
                assert name.endswith("_seed" + seed.split("=")[1]) and base + name[-6:] in runs, name
                extra = extra[1:]
            if seed is None or extra[0] != seed:
                assert extra[0].startswith("model.base_dtype="), name
                assert all(e.startswith("model.fp8_") for e in extra[1:]), name


def test_next_plan_measures_each_new_fp8_option_alone_and_together_and_their_quality():
    plan = gpu_fp8.PLANS["next"]
    speed = dict(plan["speed"])
    assert speed["lora_1b"][:2] == ["--workload", "lora_1b"]
    base = speed["lora_1b_fp8_shared"]  # the new default: q/k/v and gate/up share their input's quantization
    options = {name: frozenset(args[len(base) :]) for name, args in speed.items() if args[: len(base)] == base}
    unshared, output = "model.fp8_shared_input=False", "model.fp8_output=True"
    # the default, session 8's code, fp8_output alone, both: one run each, otherwise the same command
    assert sorted(options.values(), key=sorted) == sorted(
        [frozenset(), frozenset({unshared}), frozenset({output}), frozenset({unshared, output})], key=sorted
    )
    quality = dict(plan["quality"])
    assert {"quality_bf16", "quality_bf16_seed1"} <= quality.keys()
    assert any(output in args for args in quality.values())  # the numerics fp8_output changes
    assert not any(unshared in args for args in quality.values())  # sharing changes no number (tests/quantization)


def test_qlora_plan_measures_the_8b_qlora_with_each_fp8_compute_recipe_against_bf16():
    speed = dict(gpu_fp8.PLANS["qlora"]["speed"])
    base = speed.pop("qlora_8b")
    assert base == ["--workload", "qlora_8b", *gpu_fp8.SPEED_8B, "compile=True"]
    # one override each: the FP8 compute recipe, on the very same command
    assert {name: args[len(base) :] for name, args in speed.items() if args[: len(base)] == base} == {
        "qlora_8b_fp8_all": ["model.base_dtype=fp8_all"],
        "qlora_8b_fp8_fwd": ["model.base_dtype=fp8_fwd"],
    }
    # quality: the LoRA 1B runs' settings on QLoRA 1B (one setting apart: the test above)
    quality = dict(gpu_fp8.PLANS["qlora"]["quality"])
    ref = quality["quality_qlora_bf16"]
    assert ref[:2] == ["--workload", "qlora_1b"] and ref[2:] == dict(gpu_fp8.RECIPE_QUALITY)["quality_bf16"][2:]
    assert sorted(quality) == ["quality_qlora_bf16", "quality_qlora_bf16_seed1", "quality_qlora_fp8_all"]


def test_summary_reads_qlora_quality_runs_against_the_qlora_bf16_run():
    falling = [10.0 - 0.02 * i for i in range(60)]
    results = {
        "quality_bf16": {"losses": [x * 2 for x in falling]},
        "quality_qlora_bf16": {"losses": falling},
        "quality_qlora_fp8_all": {"losses": falling},
    }
    text = gpu_fp8.summary(results)
    gap = next(line for line in text.splitlines() if line.startswith("quality_qlora_fp8_all vs "))
    assert gap.startswith("quality_qlora_fp8_all vs quality_qlora_bf16:") and '"within": true' in gap
    assert "quality_qlora_bf16 vs quality_bf16" not in text
    results = {"quality_qlora_bf16": {"losses": falling}, "quality_qlora8b_bf16": {"losses": [x * 2 for x in falling]}}
    results["quality_qlora8b_fp8_all"] = {"losses": [x * 2 for x in falling]}
    gap = next(line for line in gpu_fp8.summary(results).splitlines() if line.startswith("quality_qlora8b_fp8_all"))
    assert gap.startswith("quality_qlora8b_fp8_all vs quality_qlora8b_bf16:") and '"within": true' in gap


def test_summary_lists_speed_and_each_quality_gap():
    falling = [10.0 - 0.02 * i for i in range(60)]
    results = {
        "lora_1b": {"tokens_per_s_median": 100.0, "peak_alloc_gib": 1.0, "peak_reserved_gib": 1.5, "mfu": 0.5},
        "quality_bf16": {"losses": falling},
        "quality_fp8_all": {"losses": [x * 1.05 for x in falling]},
        "skipped": {"error": "out of time"},
    }
    text = gpu_fp8.summary(results)
    assert "lora_1b | 100.0 | 1.0 / 1.5 | 0.5" in text and "skipped" not in text
    gap = next(line for line in text.splitlines() if line.startswith("quality_fp8_all vs quality_bf16"))
    assert '"within": false' in gap and '"held_out_rel": 0.05' in gap


def test_summary_pairs_runs_of_one_seed_and_compares_the_mean_over_seeds():
    """An FP8 run of seed 1 is read against the bf16 run of seed 1 (the same LoRA init), and each arm's
    curve averaged over its seeds against the bf16 arm's average over the same seeds."""
    falling = [10.0 - 0.02 * i for i in range(60)]
    results = {
        "quality_bf16": {"losses": falling},
        "quality_bf16_seed1": {"losses": [x * 1.04 for x in falling]},
        "quality_fp8_all_output": {"losses": [x * 1.02 for x in falling]},
        "quality_fp8_all_output_seed1": {"losses": [x * 1.04 for x in falling]},
    }
    lines = gpu_fp8.summary(results).splitlines()
    pair = next(line for line in lines if line.startswith("quality_fp8_all_output_seed1 vs quality_bf16_seed1:"))
    assert '"within": true' in pair  # equal curves; against seed 0 it is 4% off
    assert '"within": false' in next(
        line for line in lines if line.startswith("quality_fp8_all_output_seed1 vs quality_bf16:")
    )
    mean = next(line for line in lines if "mean over seeds" in line)
    assert mean.startswith("quality_fp8_all_output vs quality_bf16, mean over seeds ['', '_seed1']:")
    gap = json.loads(mean.split(": ", 1)[1])
    assert abs(gap["held_out_rel"] - (1.03 / 1.02 - 1)) < 1e-9  # (1.02 + 1.04) / 2 against (1 + 1.04) / 2
    assert not any(line.startswith("quality_bf16_seed1 vs quality_bf16_seed1") for line in lines)
