"""Committed benchmark results reproduce: rerun the runs each result names, same numbers.

A chapter may render a run too long for its 60 s from ``benchmarks/results/*.json`` only if
the file carries a provenance record (``course_lib.results``) and this test reruns some of
its runs from their recorded specs and gets the same per-step metrics and evaluations,
exactly (wall times and memory excluded). A result registers itself: its
``provenance["reproduce"]`` names the script, the function that executes one spec and the
run ids to rerun; nothing needs adding here. A run too long for the test's budget is rerun
on its first ``reproduce["prefix_steps"]`` steps (:func:`prefix_spec`, :func:`exact_prefix`).
Files written before the provenance record existed are listed in ``WITHOUT_PROVENANCE`` with
the reason, and must leave the list once they are regenerated.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from course_lib.results import check_provenance, cpu_model, results_dir

ROOT = Path(__file__).resolve().parents[1]

#: result files that predate the provenance record: rendered nowhere as reproduced facts;
#: each leaves this list when its script rewrites it with provenance.
WITHOUT_PROVENANCE = {
    "grpo_3layer_temp0.7_seed1.json": "course_lib.train output kept as a note",
    "grpo_default_1500steps_seed0.json": "course_lib.train output kept as a note",
}


def _results() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(results_dir().glob("*.json"))}


def _cases() -> list[tuple[str, str]]:
    return [(name, run_id) for name, r in _results().items() if "provenance" in r
            for run_id in r["provenance"]["reproduce"]["runs"]]


def _load_script(relative_path: str):
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(f"_reproduce_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _same(a, b) -> bool:
    """Exact equality of JSON values, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def first_difference(expected: dict, got: dict) -> str | None:
    """None if the two ``exact`` dicts are equal, else a sentence about the first difference."""
    got = json.loads(json.dumps(got))  # what the committed file would have held
    missing = sorted(set(expected) - set(got))
    if missing:
        return (f"metrics {missing} recorded in the result are missing from the rerun "
                f"(renamed history keys? the rerun has {sorted(got)})")
    for key in sorted(expected):
        e, g = expected[key], got[key]
        if _same(e, g):
            continue
        if isinstance(e, list) and isinstance(g, list):
            for i, (x, y) in enumerate(zip(e, g, strict=False)):
                if not _same(x, y):
                    return f"{key}[{i}]: recorded {x!r}, rerun {y!r}"
            return f"{key}: recorded {len(e)} entries, rerun {len(g)}"
        return f"{key}: recorded {e!r}, rerun {g!r}"
    return None


def prefix_spec(run_spec: dict, steps: int) -> dict:
    """``run_spec`` cut to its first ``steps`` training steps; ValueError if those steps or
    their evaluations would differ from the first ``steps`` of the full run."""
    cfg = run_spec["config"]
    if cfg["lr_schedule"] != "constant" or cfg["warmup_steps"] > 0:
        raise ValueError(f"prefix_steps needs a constant learning rate with no warm-up (the "
                         f"schedule would depend on the run's length), got lr_schedule "
                         f"{cfg['lr_schedule']!r}, warmup_steps {cfg['warmup_steps']}")
    if not 0 < steps <= cfg["steps"]:
        raise ValueError(f"prefix_steps {steps} is not within the run's {cfg['steps']} steps")
    if not cfg["eval_every"] or steps % cfg["eval_every"]:
        raise ValueError(f"the rerun evaluates at its last step {steps}, the full run did not "
                         f"(eval_every {cfg['eval_every']}): use a multiple of eval_every")
    return {**run_spec, "config": {**cfg, "steps": steps}}


def exact_prefix(exact: dict, steps: int) -> dict:
    """What the first ``steps`` steps of a run determine of its ``exact``: the first ``steps``
    entries of each per-step list, the evaluations at steps <= ``steps`` (the ``eval_*``
    lists), every other value whole."""
    n_evals = sum(s <= steps for s in exact["eval_step"])

    def cut(key, value):
        if not isinstance(value, list):
            return value
        return value[:n_evals] if key.startswith("eval_") else value[:steps]

    return {k: cut(k, v) for k, v in exact.items()}


def test_every_result_has_provenance_or_a_reason():
    results = _results()
    for name, result in results.items():
        if name in WITHOUT_PROVENANCE:
            assert "provenance" not in result, (
                f"{name} now has provenance: remove it from WITHOUT_PROVENANCE")
            continue
        try:
            check_provenance(result)
        except ValueError as e:
            pytest.fail(f"{name}: {e}")
        assert result["provenance"]["git_dirty"] is False, (
            f"{name} was produced from uncommitted code: commit the script, rerun, commit")
        script = result["provenance"]["reproduce"]["script"]
        assert (ROOT / script).exists(), f"{name}: reproduce script {script} does not exist"
    assert not set(WITHOUT_PROVENANCE) - set(results), "WITHOUT_PROVENANCE lists missing files"


def test_first_difference_catches_a_change():
    exact = {"reward_mean": [0.1, 0.2], "eval_accuracy": [0.3, float("nan")]}
    assert first_difference(exact, {k: list(v) for k, v in exact.items()}) is None
    assert "reward_mean[1]" in first_difference(exact, {**exact, "reward_mean": [0.1, 0.25]})
    assert "missing" in first_difference(exact, {"eval_accuracy": exact["eval_accuracy"]})
    assert "entries" in first_difference(exact, {**exact, "reward_mean": [0.1]})


def test_prefix_comparison_catches_a_change():
    exact = {"step": [1, 2, 3, 4], "reward_mean": [0.1, 0.2, 0.3, 0.4],
             "eval_step": [0, 2, 4], "eval_accuracy": [0.3, 0.35, 0.4],
             "warm_by_format": {"direct": {"accuracy": 0.2, "n": 9}}}
    head = exact_prefix(exact, 2)
    assert head == {"step": [1, 2], "reward_mean": [0.1, 0.2], "eval_step": [0, 2],
                    "eval_accuracy": [0.3, 0.35], "warm_by_format": exact["warm_by_format"]}
    rerun = json.loads(json.dumps(head))
    assert first_difference(head, rerun) is None
    assert "reward_mean[1]" in first_difference(head, {**rerun, "reward_mean": [0.1, 0.25]})
    assert "eval_accuracy[1]" in first_difference(head, {**rerun, "eval_accuracy": [0.3, 0.36]})
    assert "warm_by_format" in first_difference(
        head, {**rerun, "warm_by_format": {"direct": {"accuracy": 0.2, "n": 8}}})
    assert "entries" in first_difference(head, {**rerun, "step": [1, 2, 3]})


def test_prefix_is_refused_when_the_first_steps_depend_on_the_run_length():
    spec = {"config": {"steps": 300, "eval_every": 50, "lr_schedule": "constant",
                       "warmup_steps": 0}}
    assert prefix_spec(spec, 50)["config"]["steps"] == 50 and spec["config"]["steps"] == 300
    for change, steps, why in [({"lr_schedule": "linear"}, 50, "constant learning rate"),
                               ({"warmup_steps": 10}, 50, "no warm-up"),
                               ({}, 60, "multiple of eval_every"),
                               ({"eval_every": 0}, 50, "multiple of eval_every"),
                               ({}, 400, "within the run")]:
        with pytest.raises(ValueError, match=why):
            prefix_spec({"config": {**spec["config"], **change}}, steps)


@pytest.mark.slow
@pytest.mark.parametrize("name, run_id", _cases())
def test_committed_run_reproduces(name, run_id):
    result = _results()[name]
    prov = result["provenance"]
    record = next(r for r in result["runs"] if r["id"] == run_id)
    run_spec, expected = record["spec"], record["exact"]
    prefix = prov["reproduce"].get("prefix_steps")
    if prefix is not None:  # rerun and compare only the first `prefix` steps
        run_spec, expected = prefix_spec(run_spec, prefix), exact_prefix(expected, prefix)
    execute = getattr(_load_script(prov["reproduce"]["script"]), prov["reproduce"]["function"])
    threads = torch.get_num_threads()
    got = execute(run_spec)
    assert torch.get_num_threads() == threads, "the rerun must restore the thread count"
    diff = first_difference(expected, got["exact"])
    recorded_cpu = prov["machine"].get("cpu")
    if diff is not None and recorded_cpu != cpu_model():
        # another CPU: MKL and ATen choose their float kernels by CPU, so the rounding (and
        # with it the supervised warm start) differs from the first matrix product on; only
        # the recording kind of CPU can check this result (a result recorded before the cpu
        # field existed counts as another CPU). On the recording CPU a difference fails.
        pytest.skip(f"{name} {run_id}: {diff}; recorded on CPU {recorded_cpu!r}, this is "
                    f"{cpu_model()!r}: regenerate the result on this kind of CPU to check it")
    extra = got.get("config_fields_not_in_spec")
    assert diff is None, (
        f"{name} {run_id} no longer reproduces: {diff}. The code changed the numbers since "
        f"revision {prov['git_revision'][:10]}"
        + (f" (config fields added since, at their defaults: {extra})" if extra else "")
        + f"; rerun `{prov['command']}` at a committed revision and commit the result.")


def test_rerun_of_a_spec_is_exact_and_a_changed_spec_is_caught():
    bench = _load_script("benchmarks/bench_training.py")
    spec = bench.spec("grpo", 0, {"steps": 3, "eval_every": 0, "prompts_per_step": 4})
    first, again = bench.execute(spec), bench.execute(json.loads(json.dumps(spec)))
    assert first_difference(first["exact"], again["exact"]) is None
    other = json.loads(json.dumps(spec))
    other["config"]["seed"] = 1
    assert first_difference(first["exact"], bench.execute(other)["exact"]) is not None
    assert first["config_fields_not_in_spec"] == []


def test_t_quantile_and_intervals_match_tables():
    from course_lib.results import mean_interval, t_quantile, welch_interval

    # Student's t table: t_{0.975} for 1, 4 and 30 degrees of freedom; normal for large df
    for df, t in [(1, 12.7062), (4, 2.7764), (30, 2.0423), (10**6, 1.9600)]:
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-4)
    mean, lo, hi = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])  # s = sqrt(2.5), n = 5
    assert mean == 3.0 and hi - mean == pytest.approx(2.7764 * math.sqrt(2.5 / 5), abs=1e-3)
    d, lo, hi = welch_interval([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert d == 0 and lo < 0 < hi
    with pytest.raises(ValueError):
        mean_interval([1.0])
