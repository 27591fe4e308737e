"""The benchmark scripts' own arithmetic: pass@k, prompt classes, the paired ratio."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


converge = _load("bench_converge")


def test_pass_at_k_is_the_unbiased_estimator():
    p = converge.pass_at_k
    assert p(64, 0, 64) == 0.0 and p(64, 1, 64) == 1.0 and p(64, 64, 1) == 1.0
    assert p(2, 1, 1) == 0.5 and p(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(n-c, k) / C(n, k), checked against the product form
    n, c, k = 64, 5, 8
    assert p(n, c, k) == pytest.approx(1 - math.prod((n - c - i) / (n - i) for i in range(k)))


@pytest.mark.parametrize("prompt, classes", [
    ("05+05=", ["ends_in_0", "carry"]), ("03+04=", ["one_digit", "no_carry"]),
    ("20+30=", ["ends_in_0", "no_carry"]), ("17+25=", ["other", "carry"]),
    ("49+49=", ["other", "carry"]), ("00+00=", ["one_digit", "no_carry"]),
])
def test_prompt_classes(prompt, classes):
    assert converge.prompt_class(prompt) == classes


def test_report_counts_stalled_seeds_as_not_reached():
    def run(variant, seed, steps_to_95, final):
        return {"variant": variant, "seed": seed, "classes": {},
                "summary": {"steps_to_95": steps_to_95, "final_accuracy": final},
                "exact": {"step": [1], "eval_step": [0], "eval_accuracy": [0.3],
                          "degenerate_all_wrong": [0.5], "degenerate_all_right": [0.0],
                          "entropy": [0.7]}}
    runs = [run("baseline", 0, 400, 0.95), run("baseline", 1, None, 0.864),
            run("baseline", 2, None, 0.86)]
    assert converge._median_steps(runs) == "not reached"
    assert converge._median_steps(runs[:1] + runs[:1] + runs[1:2]) == "400"
    groups = converge._diagnosis_groups(runs)
    assert [len(g) for g in groups.values()] == [2, 1]
