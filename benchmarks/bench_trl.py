"""course_lib's GRPO trainer vs TRL's GRPOTrainer on the same problem, seed by seed.

The problem (issue 7): the running example a+b (a, b in 0..49, "07+38=" -> "45$"), reward 1
only for the exact answer, 2000 training / 500 held-out prompts; the GPT-2 of
``course_lib.trl_bridge`` (2 layers, width 128) from the same supervised warm start (about
30% greedy held-out accuracy). Both run the fast recipe's settings
(``course_lib.recipes.grpo_config``: 16 prompts x 8 completions, at most 4 new tokens, loss
"grpo", group std with eps 1e-4 as TRL hard-codes, clip 0.2, beta 0, one update per batch,
T 0.7, lr 3e-4 with linear decay to 0 at the step limit), mapped to TRL by
``trl_bridge.to_trl_config``, except one setting TRL does not have: the recipe's
prioritized prompt sampling (Kimi k1.5), which TRL replaces by its uniform sampler
(``--prompt-sampling uniform`` gives course_lib the same). Both trainers train the *same*
``transformers.GPT2LMHeadModel``; both are evaluated by the same function (greedy accuracy
on the 500 held-out prompts, every ``--eval-every`` steps) and evaluation time is excluded
from their clocks.

Every (trainer, seed) runs in a fresh subprocess (clean peak-memory numbers, no shared
caches), one after the other, with ``--threads`` torch threads. A run stops at ``--stop-at``
held-out accuracy (0.95) or after ``--steps`` steps. Printed: one row per run (ms per step,
training seconds and steps to 90% and 95%, final accuracy, peak resident memory), the
medians per trainer, and the paired ratio seed by seed: TRL's training seconds to 95%
over course_lib's, where a run that never reaches 95% counts with all its training
seconds (its step limit), marked ">=" because the true time is longer.

    python benchmarks/bench_trl.py --trainers course_lib trl --seeds 0 1 2 3 4 5 6 7 8 9 \
        --json benchmarks/results/trl.json
    python benchmarks/bench_trl.py --seeds 0 --steps 60 --eval-every 20   # a quick check

The JSON holds every run's spec, its evaluations and rewards (``"exact"``, which the same
spec reproduces) and its timings, with the provenance record of :mod:`course_lib.results`;
``tests/test_results_reproduce.py`` reruns course_lib's seed 0. No timed asserts: timings
depend on the machine and its load (the provenance records the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict

LEVELS = (0.90, 0.95)
#: trainer -> what the table calls it
TRAINERS = {
    "course_lib": "course_lib GRPOTrainer, GPT2LMHeadModel",
    "trl": "TRL GRPOTrainer, GPT2LMHeadModel",
    "course_lib_tinygpt": "course_lib GRPOTrainer, TinyGPT (same weights)",
}
#: the run the reproduce test reruns
REPRODUCE = ["course_lib/seed0"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--steps", type=int, default=800, help="step limit of every run")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-schedule", choices=("constant", "linear"), default="linear")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--mu", type=int, default=1, help="updates per batch (TRL num_iterations)")
    p.add_argument("--warmup", type=int, default=0, help="linear learning-rate warmup steps")
    p.add_argument("--prompt-sampling", choices=("prioritized", "uniform"),
                   default="prioritized", help="course_lib's (TRL has only uniform)")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--stop-at", type=float, default=0.95,
                   help="stop a run once held-out accuracy reaches this (0: run all steps)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--trainers", nargs="+", default=["course_lib", "trl"],
                   choices=list(TRAINERS))
    p.add_argument("--json", default=None, help="also write every run's numbers here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a spec file to run
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------ one run (child) ---
def spec(trainer: str, seed: int, args) -> dict:
    """Everything one run needs, in full: the trainer, the course config, threads."""
    from course_lib import recipes

    sampling = "uniform" if trainer == "trl" else args.prompt_sampling
    cfg = recipes.grpo_config(
        steps=args.steps, lr=args.lr, lr_schedule=args.lr_schedule, mu=args.mu,
        warmup_steps=args.warmup, temperature=args.temperature, prompt_sampling=sampling,
        eval_every=args.eval_every, stop_at_accuracy=args.stop_at or None, seed=seed)
    return {"trainer": trainer, "seed": seed, "threads": args.threads, "config": asdict(cfg),
            "model_config": asdict(recipes.model_config()),
            "sft_config": asdict(recipes.sft_config())}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def execute(run_spec: dict) -> dict:
    """Run ``run_spec`` in this process; returns ``{"spec", "exact", "timing"}``: the
    evaluations and per-step rewards (reproducible) and the seconds and memory (not)."""
    from transformers.utils import logging as hf_logging

    from course_lib import trl_bridge as tb
    from course_lib.results import config_from_spec, torch_threads, warm_start_from_spec
    from course_lib.trainers.grpo import GRPOConfig, GRPOTrainer

    hf_logging.set_verbosity_error()
    with torch_threads(run_spec["threads"]):
        task, tiny = warm_start_from_spec(run_spec)
        # the very same weights for every trainer: TinyGPT, or the GPT-2 computing it
        model = tiny if run_spec["trainer"] == "course_lib_tinygpt" else tb.to_hf(tiny)
        model.train()
        cfg = config_from_spec(GRPOConfig, run_spec["config"])
        rss_before = _rss_mb()
        if run_spec["trainer"] == "trl":
            acc = tb.HeldOutAccuracy(task, eval_every=cfg.eval_every,
                                     stop_at_accuracy=cfg.stop_at_accuracy,
                                     completions_per_step=cfg.prompts_per_step * cfg.group_size)
            with tempfile.TemporaryDirectory() as out_dir:
                trainer = tb.make_trl_trainer(model, task, cfg, output_dir=out_dir,
                                              callbacks=[acc])
                trainer.train()
            hist = dict(acc.history)
            hist["reward"] = [x["reward"] for x in trainer.state.log_history if "reward" in x]
        else:
            h = GRPOTrainer(model, task, cfg).train(progress=False)
            hist = {k: h[k] for k in ("eval_step", "eval_accuracy", "eval_wall",
                                      "step_seconds")}
            hist["reward"] = h["reward_mean"]
    timing_keys = ("eval_wall", "step_seconds")
    return {"spec": run_spec,
            "exact": {k: v for k, v in hist.items() if k not in timing_keys},
            "timing": {**{k: hist[k] for k in timing_keys}, "rss_before_mb": rss_before,
                       "peak_rss_mb": _rss_mb()}}


# --------------------------------------------------------------- summary (parent) ---
def summarize(run: dict) -> dict:
    """ms per step, steps and training seconds to each level, final accuracy, memory."""
    exact, timing = run["exact"], run["timing"]
    steps_s = timing["step_seconds"]
    n = run["spec"]["config"]["prompts_per_step"] * run["spec"]["config"]["group_size"]
    out = {"ms_per_step": 1000 * statistics.median(steps_s),
           "completions_per_s": n / statistics.median(steps_s),
           "final_accuracy": exact["eval_accuracy"][-1], "steps": len(steps_s),
           "train_seconds": timing["eval_wall"][-1], "peak_rss_mb": timing["peak_rss_mb"]}
    for level in LEVELS:
        hit = [i for i, a in enumerate(exact["eval_accuracy"]) if a >= level]
        out[f"s_to_{level:.2f}"] = timing["eval_wall"][hit[0]] if hit else None
        out[f"steps_to_{level:.2f}"] = exact["eval_step"][hit[0]] if hit else None
    return out


def paired(runs: list[dict], a: str = "trl", b: str = "course_lib") -> list[dict]:
    """Seed by seed: ``a``'s training seconds to 95% over ``b``'s. A run that never reached
    95% counts with all its training seconds (a lower bound: ``"bound": True``)."""
    by = {(r["trainer"], r["seed"]): r["summary"] for r in runs}
    rows = []
    for seed in sorted({s for t, s in by if t == a and (b, s) in by}):
        sa, sb = by[(a, seed)], by[(b, seed)]
        ta = sa["s_to_0.95"] if sa["s_to_0.95"] is not None else sa["train_seconds"]
        tb_ = sb["s_to_0.95"] if sb["s_to_0.95"] is not None else sb["train_seconds"]
        rows.append({"seed": seed, a: ta, b: tb_, "ratio": ta / tb_,
                     "bound": sa["s_to_0.95"] is None, f"{b}_unfinished": sb["s_to_0.95"] is None})
    return rows


def _median(xs):
    """Median over seeds; None (never reached) counts as +inf. Returns None if the median is."""
    vals = sorted(float("inf") if x is None else x for x in xs)
    m = statistics.median(vals)
    return None if m == float("inf") else m


def table(summaries: dict[str, list[dict]]) -> str:
    """Medians over seeds per trainer (None, never reached, counts as +inf)."""
    def fmt(x, spec):
        return "not reached" if x is None else format(x, spec)

    rows = ["| trainer | ms/step | completions/s | s to 90% (steps) | s to 95% (steps) "
            "| final acc | peak RSS MB | reached 95% |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, runs in summaries.items():
        reached = sum(r["s_to_0.95"] is not None for r in runs)
        cells = [TRAINERS[name], fmt(_median([r["ms_per_step"] for r in runs]), ".1f"),
                 fmt(_median([r["completions_per_s"] for r in runs]), ".0f")]
        for level in ("0.90", "0.95"):
            s = _median([r[f"s_to_{level}"] for r in runs])
            st = _median([r[f"steps_to_{level}"] for r in runs])
            cells.append(fmt(s, ".1f") + ("" if st is None else f" ({st:.0f})"))
        cells += [fmt(_median([r["final_accuracy"] for r in runs]), ".3f"),
                  fmt(max(r["peak_rss_mb"] for r in runs), ".0f"),
                  f"{reached}/{len(runs)}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def seed_table(runs: list[dict]) -> str:
    """One row per run, then the paired ratio per seed."""
    rows = ["| trainer | seed | steps | final acc | s to 95% (step) | ms/step | peak RSS MB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(runs, key=lambda r: (r["trainer"], r["seed"])):
        s = r["summary"]
        hit = ("not reached" if s["s_to_0.95"] is None
               else f"{s['s_to_0.95']:.1f} ({s['steps_to_0.95']})")
        rows.append(f"| {r['trainer']} | {r['seed']} | {s['steps']} | {s['final_accuracy']:.3f} "
                    f"| {hit} | {s['ms_per_step']:.1f} | {s['peak_rss_mb']:.0f} |")
    pairs = paired(runs)
    if pairs:
        rows += ["", "| seed | TRL s to 95% | course_lib s to 95% | TRL / course_lib |",
                 "| ---: | ---: | ---: | ---: |"]
        for p in pairs:
            mark = ">= " if p["bound"] else ""
            rows.append(f"| {p['seed']} | {mark}{p['trl']:.1f} | {p['course_lib']:.1f}"
                        f"{' (not reached)' if p['course_lib_unfinished'] else ''} "
                        f"| {mark}{p['ratio']:.2f}x |")
        ratios = [p["ratio"] for p in pairs]
        rows.append(f"\npaired ratio: min {min(ratios):.2f}x, median "
                    f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x over "
                    f"{len(ratios)} seeds ({sum(p['bound'] for p in pairs)} of them TRL never "
                    "reached 95%: its ratio is a lower bound)")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    if args.one:  # child: run one spec file
        with open(args.one) as f:
            record = execute(json.load(f))
        with open(args.out, "w") as f:
            json.dump(record, f)
        return
    from course_lib.results import collect_provenance, write_result

    prov = collect_provenance(args.seeds, torch_threads=args.threads,
                              packages=("transformers", "trl"), reproduce={
                                  "script": "benchmarks/bench_trl.py", "function": "execute",
                                  "runs": REPRODUCE})
    runs, summaries = [], {t: [] for t in args.trainers}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for trainer in args.trainers:
                run_spec = spec(trainer, seed, args)
                spec_path, out = (os.path.join(tmp, f"{trainer}_{seed}{x}.json")
                                  for x in ("_spec", ""))
                with open(spec_path, "w") as f:
                    json.dump(run_spec, f)
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                           TOKENIZERS_PARALLELISM="false")
                subprocess.run([sys.executable, os.path.abspath(__file__), "--one", spec_path,
                                "--out", out], check=True, env=env)
                with open(out) as f:
                    record = json.load(f)
                s = summarize(record)
                runs.append({"id": f"{trainer}/seed{seed}", "trainer": trainer, "seed": seed,
                             **record, "summary": s})
                summaries[trainer].append(s)
                print(f"{trainer:18s} seed {seed}: {s['ms_per_step']:.1f} ms/step, "
                      f"90% at {s['s_to_0.90']} s, 95% at {s['s_to_0.95']} s, "
                      f"final {s['final_accuracy']:.3f} after {s['steps']} steps", flush=True)
    print(f"\nGRPO on a+b, GPT-2 2x128, course_lib.recipes settings: lr {args.lr} "
          f"({args.lr_schedule}), temperature {args.temperature}, mu {args.mu}, course_lib "
          f"prompt sampling {args.prompt_sampling} (TRL: uniform), seeds {args.seeds}, "
          f"<= {args.steps} steps, {args.threads} thread(s) "
          f"({time.perf_counter() - t0:.0f} s in total)\n")
    print(seed_table(runs))
    print("\nmedians over seeds (a seed that never reached a level counts as +inf):\n")
    print(table(summaries))
    if args.json:
        if not set(REPRODUCE) <= {r["id"] for r in runs}:
            prov["reproduce"]["runs"] = [runs[0]["id"]]
        write_result(args.json, {"provenance": prov, "args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()
