"""Does every seed of GRPO reach 95%? The 0.86 plateau diagnosed, and the fixes measured.

Chapter: "GRPO" ("GRPO cannot learn what it never samples"). Issue 13: on a+b, from the
recipe's warm start (:mod:`course_lib.recipes`: the 2x128 TinyGPT, the same network and
weights as the GPT-2 of ``bench_trl.py``), about half of the seeds of plain GRPO stall near
0.86 held-out accuracy. This script runs each variant (:data:`VARIANTS`, overrides of
``recipes.grpo_config()``) with every seed and, at the end of each run, looks at the
held-out prompts class by class (:func:`prompt_class`): greedy accuracy, and pass@k at the
sampling temperature (k = 1, 8, 64 from 64 samples per prompt, the unbiased estimator of
Chen et al. 2021, Eq. 1). Per step it keeps the whole history (reward, entropy, the
all-wrong and all-right group shares, ...).

    python benchmarks/bench_converge.py --json benchmarks/results/converge.json
    python benchmarks/bench_converge.py --variants recipe --seeds 0 --json /tmp/c.json
    python benchmarks/bench_converge.py --report benchmarks/results/converge.json

The GRPO chapter's mechanisms (``MECHANISMS``), three seeds each:

    python benchmarks/bench_converge.py --variants recipe mu4_clip0.1 mu4_clip0.2
        mu4_clip0.5 beta0.04 dr_grpo dapo_mu4 dynamic --seeds 0 1 2
        --reproduce beta0.04/seed0 dynamic/seed0 --json benchmarks/results/grpo_variants.json

Steps and accuracies depend only on the seed; the seconds depend on the machine and on
``--jobs`` (runs in parallel share it), so the training-time claims of issue 13 are
``bench_trl.py``'s, run alone. ``--report`` prints the markdown of
``benchmarks/results/converge.md`` from a result file. No timed asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: variant -> overrides of recipes.grpo_config() (steps: the run's length; a linear
#: schedule reaches lr 0 at its last step, so "linear" and "recipe" end at step 800).
VARIANTS = {
    "baseline": {"prompt_sampling": "uniform", "lr_schedule": "constant", "steps": 2000},
    "linear": {"prompt_sampling": "uniform"},
    "prioritized": {"lr_schedule": "constant", "steps": 2000},
    "recipe": {},
}
#: The GRPO chapter's mechanisms on the language model (``grpo_variants.json``): the clip
#: with several updates per batch (the draft's clipping exercise: eps 0.1, 0.2, 0.5), the
#: k3 KL term at DeepSeekMath's beta, Dr. GRPO, and DAPO's loss with clip-higher.
MECHANISMS = {
    "mu4_clip0.1": {"mu": 4, "clip_eps": 0.1},
    "mu4_clip0.2": {"mu": 4, "clip_eps": 0.2},
    "mu4_clip0.5": {"mu": 4, "clip_eps": 0.5},
    "beta0.04": {"beta": 0.04},
    "dr_grpo": {"loss_type": "dr_grpo", "scale": "none"},
    "dapo_mu4": {"loss_type": "dapo", "clip_eps_high": 0.28, "mu": 4},
    "dynamic": {"dynamic_sampling": True},
}
ALL_VARIANTS = {**VARIANTS, **MECHANISMS}
KS = (1, 8, 64)
#: the run the reproduce test reruns
REPRODUCE = ["recipe/seed0"]


def prompt_class(prompt: str) -> list[str]:
    """The classes of an a+b prompt: by answer ("ends_in_0", "one_digit" or "other") and
    by carry ("carry" if the units digits sum to 10 or more, else "no_carry")."""
    a, b = (int(x) for x in prompt.rstrip("=").split("+"))
    s = a + b
    by_answer = "one_digit" if s < 10 else "ends_in_0" if s % 10 == 0 else "other"
    return [by_answer, "carry" if a % 10 + b % 10 >= 10 else "no_carry"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)
    (Chen et al. 2021, Eq. 1)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def class_report(policy, task, temperature: float, n_samples: int = 64,
                 seed: int = 0) -> dict:
    """Per class of held-out prompt: count, greedy accuracy, mean pass@k (k in KS)."""
    import torch

    from course_lib.evaluate import greedy_completions
    from course_lib.model import sample

    prompts = task.test
    greedy = greedy_completions(policy, task, prompts)
    gen = torch.Generator().manual_seed(seed)
    correct = []
    for i in range(0, len(prompts), 100):  # 100 prompts x 64 samples per batch
        chunk = [p for p in prompts[i:i + 100] for _ in range(n_samples)]
        with torch.no_grad():
            out = sample(policy, task.encode_prompts(chunk), task.max_new_tokens,
                         temperature=temperature, generator=gen)
        hits = [task.is_correct(p, task.decode(t)) for p, t in zip(chunk, out.tokens,
                                                                  strict=True)]
        correct += [sum(hits[j:j + n_samples]) for j in range(0, len(hits), n_samples)]
    rows: dict[str, list[tuple[bool, int]]] = {"all": []}
    for p, g, c in zip(prompts, greedy, correct, strict=True):
        for name in ("all", *prompt_class(p)):
            rows.setdefault(name, []).append((task.is_correct(p, g), c))
    return {name: {"n": len(r), "greedy_accuracy": sum(g for g, _ in r) / len(r),
                   "pass_at": {str(k): statistics.fmean(pass_at_k(n_samples, c, k)
                                                        for _, c in r) for k in KS}}
            for name, r in sorted(rows.items())}


def spec(variant: str, seed: int) -> dict:
    """Everything one run needs, in full (the recipe's configs with the variant's overrides)."""
    from course_lib import recipes

    config = recipes.grpo_config(seed=seed, **ALL_VARIANTS[variant])
    return {"variant": variant, "task": "addition", "warm_start_seed": 0, "threads": 1,
            "config": asdict(config), "model_config": asdict(recipes.model_config()),
            "sft_config": asdict(recipes.sft_config())}


def summary(history: dict) -> dict:
    """Steps, training seconds and samples to 90% / 95% held-out, and the final accuracy."""
    from course_lib.train import time_to_accuracy

    out = {"final_accuracy": history["eval_accuracy"][-1], "steps": history["step"][-1]}
    for level in (0.90, 0.95):
        hit = time_to_accuracy(history, level)
        out[f"steps_to_{round(100 * level)}"] = hit and hit["step"]
        out[f"s_to_{round(100 * level)}"] = hit and hit["wall"]
    return out


def execute(run_spec: dict) -> dict:
    """Run ``run_spec`` in this process: warm start, train, diagnose; returns the record.

    ``"exact"`` is the per-step history and the evaluations (the same spec reproduces them
    exactly), ``"timing"`` the seconds (which it does not); ``"classes"`` the end-of-run
    :func:`class_report`.
    """
    from course_lib.results import config_from_spec, torch_threads, warm_start_from_spec
    from course_lib.trainers import GRPOConfig, GRPOTrainer
    from course_lib.trainers.metrics import TIMINGS

    config = config_from_spec(GRPOConfig, run_spec["config"])
    with torch_threads(run_spec["threads"]):
        task, policy = warm_start_from_spec(run_spec)
        history = GRPOTrainer(policy, task, config).train(progress=False)
        classes = class_report(policy, task, config.temperature, seed=config.seed)
    return {"spec": run_spec, "exact": {k: v for k, v in history.items() if k not in TIMINGS},
            "timing": {k: history[k] for k in TIMINGS}, "summary": summary(history),
            "classes": classes}


def _execute_job(job: tuple[str, dict]) -> dict:
    run_id, run_spec = job
    t = time.perf_counter()
    rec = execute(run_spec)
    s = rec["summary"]
    print(f"  {run_id:20s} final {s['final_accuracy']:.3f} after {s['steps']} steps, "
          f"95% at step {s['steps_to_95']} ({time.perf_counter() - t:.0f} s)", flush=True)
    return {"id": run_id, "variant": run_spec["variant"], "seed": run_spec["config"]["seed"],
            **rec}


# ------------------------------------------------------------------- report ----
def _median_steps(runs: list[dict]) -> str:
    """Median steps to 95% over seeds, a seed that never got there counting as +inf."""
    vals = sorted(math.inf if r["summary"]["steps_to_95"] is None
                  else r["summary"]["steps_to_95"] for r in runs)
    m = statistics.median(vals)
    return "not reached" if m == math.inf else f"{m:.0f}"


def report(result: dict) -> str:
    """The markdown of converge.md: per variant every seed, then the diagnosis tables."""
    from course_lib.results import describe

    runs = result["runs"]
    out = ["# GRPO on a+b: does every seed reach 95%?", "",
           "Generated by `python benchmarks/bench_converge.py --report "
           "benchmarks/results/converge.json` from:", "", "```", describe(result), "```", "",
           "## Steps to 95% held-out accuracy, seed by seed", "",
           "| variant | overrides of `recipes.grpo_config()` | reached 95% | median steps "
           "| steps to 95% per seed (final accuracy if not reached) |",
           "| --- | --- | ---: | ---: | --- |"]
    for name, overrides in result["variants"].items():
        vr = sorted((r for r in runs if r["variant"] == name), key=lambda r: r["seed"])
        if not vr:
            continue
        cells = [str(r["summary"]["steps_to_95"]) if r["summary"]["steps_to_95"] is not None
                 else f"({r['summary']['final_accuracy']:.3f})" for r in vr]
        reached = sum(r["summary"]["steps_to_95"] is not None for r in vr)
        out.append(f"| {name} | `{json.dumps(overrides)}` | {reached}/{len(vr)} | "
                   f"{_median_steps(vr)} | {', '.join(cells)} |")
    out += ["", "## Held-out prompts by class at the end of each run", "",
            "Mean over the runs in each group; pass@k at the sampling temperature, "
            "64 samples per prompt.", "",
            "| runs | class | prompts | greedy accuracy | pass@1 | pass@8 | pass@64 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, group in _diagnosis_groups(runs).items():
        for cls in ("all", "ends_in_0", "one_digit", "other", "carry", "no_carry"):
            rows = [r["classes"][cls] for r in group if cls in r["classes"]]
            if not rows:
                continue
            greedy = statistics.fmean(x["greedy_accuracy"] for x in rows)
            passes = [statistics.fmean(x["pass_at"][str(k)] for x in rows) for k in KS]
            out.append(f"| {label} ({len(group)}) | {cls} | {rows[0]['n']} | {greedy:.3f} | "
                       + " | ".join(f"{v:.3f}" for v in passes) + " |")
    out += ["", "## Over training (baseline runs): mean over each group of runs", "",
            "| runs | step | held-out accuracy | all-wrong groups | all-right groups "
            "| entropy (nats) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, group in _diagnosis_groups(runs).items():
        if not label.startswith("baseline"):
            continue
        for step in (1, 50, 100, 200, 400, 800, 1600):
            if not all(len(r["exact"]["step"]) >= step for r in group):
                continue
            acc = statistics.fmean(_accuracy_at(r, step) for r in group)
            means = [statistics.fmean(r["exact"][key][step - 1] for r in group)
                     for key in ("degenerate_all_wrong", "degenerate_all_right", "entropy")]
            out.append(f"| {label} | {step} | {acc:.3f} | "
                       + " | ".join(f"{v:.3f}" for v in means) + " |")
    return "\n".join(out) + "\n"


def _accuracy_at(run: dict, step: int) -> float:
    """Held-out accuracy of the last evaluation at or before ``step``."""
    e = run["exact"]
    return [a for s, a in zip(e["eval_step"], e["eval_accuracy"], strict=True) if s <= step][-1]


def _diagnosis_groups(runs: list[dict]) -> dict[str, list[dict]]:
    """Baseline runs split into those that stalled (never reached 95%) and those that did,
    and the recipe's runs."""
    base = [r for r in runs if r["variant"] == "baseline"]
    groups = {"baseline, stalled": [r for r in base if r["summary"]["steps_to_95"] is None],
              "baseline, reached 95%": [r for r in base if r["summary"]["steps_to_95"]],
              "recipe": [r for r in runs if r["variant"] == "recipe"]}
    return {k: v for k, v in groups.items() if v}


# --------------------------------------------------------------------- main ----
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(ALL_VARIANTS),
                   help=f"default: {' '.join(VARIANTS)}; the chapter's mechanisms: "
                        f"recipe {' '.join(MECHANISMS)}")
    p.add_argument("--reproduce", nargs="+", default=REPRODUCE,
                   help="run ids the reproduce test reruns (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each)")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--report", default=None, help="print the markdown of this result file")
    args = p.parse_args(argv)
    if args.report:
        print(report(json.loads(Path(args.report).read_text())), end="")
        return
    from course_lib.results import collect_provenance, write_result

    prov = collect_provenance(args.seeds, torch_threads=1, reproduce={
        "script": "benchmarks/bench_converge.py", "function": "execute", "runs": args.reproduce})
    jobs = [(f"{v}/seed{s}", spec(v, s)) for v in args.variants for s in args.seeds]
    from course_lib import recipes
    from course_lib.sft import warm_start  # build the cached warm start once, up front
    from course_lib.tasks import AdditionTask

    warm_start(AdditionTask(seed=0), seed=0, model_config=recipes.model_config(),
               sft_config=recipes.sft_config())
    t0 = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = "1"
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(_execute_job, jobs))
    print(f"{len(runs)} runs in {time.perf_counter() - t0:.0f} s")
    result = {"provenance": prov, "variants": {v: ALL_VARIANTS[v] for v in args.variants},
              "runs": runs}
    print(report(result))
    if args.json:
        if not set(args.reproduce) <= {r["id"] for r in runs}:
            prov["reproduce"]["runs"] = [runs[0]["id"]]
        write_result(args.json, result)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
