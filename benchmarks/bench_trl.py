"""course_lib's GRPO trainer vs TRL's GRPOTrainer on the same problem, side by side.

The problem (issue 7): the running example a+b (a, b in 0..49, "07+38=" -> "45$"), reward 1
only for the exact answer, 2000 training / 500 held-out prompts; the GPT-2 of
``course_lib.trl_bridge`` (2 layers, width 128) from the same supervised warm start (about
30% greedy held-out accuracy); 16 prompts x 8 completions per step, at most 4 new tokens;
the same GRPO settings for both (``--lr``, loss "grpo", group std scaling with eps 1e-4 as
TRL hard-codes, clip 0.2, beta 0, one update per batch, ``--temperature`` 0.7). Both
trainers train the *same* ``transformers.GPT2LMHeadModel``; both are evaluated by the same function
(greedy accuracy on the 500 held-out prompts, every ``--eval-every`` steps) and evaluation
time is excluded from their clocks.

Every (trainer, seed) runs in a fresh subprocess (clean peak-memory numbers, no shared
caches), one after the other, with ``--threads`` torch threads. Reported per trainer, as
the median over seeds: ms per step, completions per second, training seconds (and steps)
to 90% and 95% held-out accuracy (first evaluation at or above), final accuracy, peak
resident memory of the process. Seeds that never reach a level count as not reached. A
run stops at ``--stop-at`` held-out accuracy (0.95; 0 = never) or after ``--steps`` steps,
so "final accuracy" is the accuracy at that point.

    python benchmarks/bench_trl.py --trainers course_lib trl   # 3 seeds each, <= 4000 steps
    python benchmarks/bench_trl.py --seeds 0 --steps 60 --eval-every 20   # a quick check
    python benchmarks/bench_trl.py --json benchmarks/results/trl.json

Runs that stall take all ``--steps``. The last results, and what they decided (the warm
start recipe ``trl_bridge.hf_sft_config``), are in ``benchmarks/results/README.md``.

No timed asserts: this prints a table. Timings depend on the machine and its load.
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

LEVELS = (0.90, 0.95)
#: trainer -> what the table calls it
TRAINERS = {
    "course_lib": "course_lib GRPOTrainer, GPT2LMHeadModel",
    "trl": "TRL GRPOTrainer, GPT2LMHeadModel",
    "course_lib_tinygpt": "course_lib GRPOTrainer, TinyGPT (same weights)",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=4000, help="maximum steps per run")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--mu", type=int, default=1, help="updates per batch (TRL num_iterations)")
    p.add_argument("--warmup", type=int, default=0, help="linear learning-rate warmup steps")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--stop-at", type=float, default=0.95,
                   help="stop a run once held-out accuracy reaches this (0: run all steps)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=list(TRAINERS))
    p.add_argument("--json", default=None, help="also write every run's numbers here")
    p.add_argument("--one", choices=list(TRAINERS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------ one run (child) ---
def _config(args):
    from course_lib.trainers.grpo import GRPOConfig

    return GRPOConfig(steps=args.steps, prompts_per_step=16, group_size=8, lr=args.lr,
                      loss_type="grpo", scale="group", adv_eps=1e-4, clip_eps=0.2, beta=0.0,
                      mu=args.mu, warmup_steps=args.warmup, temperature=args.temperature,
                      max_new_tokens=4, grad_clip=1.0,
                      eval_every=args.eval_every, stop_at_accuracy=args.stop_at or None,
                      seed=args.seed)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(args) -> dict:
    import torch
    from transformers.utils import logging as hf_logging

    from course_lib import trl_bridge as tb
    from course_lib.tasks import AdditionTask

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    task = AdditionTask(seed=0)
    model = tb.warm_start_hf(task, seed=0)  # the same starting weights for every run
    if args.one == "course_lib_tinygpt":  # the very same network as course_lib's own module
        from course_lib.model import ModelConfig
        from course_lib.sft import warm_start

        model = warm_start(task, seed=0, model_config=ModelConfig(**tb.HF_MODEL_CONFIG),
                           sft_config=tb.hf_sft_config())
    model.train()
    cfg = _config(args)
    rss_before = _rss_mb()
    if args.one in ("course_lib", "course_lib_tinygpt"):
        from course_lib.trainers.grpo import GRPOTrainer

        h = GRPOTrainer(model, task, cfg).train(progress=False)
        hist = {k: h[k] for k in ("eval_step", "eval_accuracy", "eval_wall", "step_seconds")}
        hist["reward"] = h["reward_mean"]
    else:
        acc = tb.HeldOutAccuracy(task, eval_every=args.eval_every,
                                 stop_at_accuracy=args.stop_at or None, completions_per_step=128)
        with tempfile.TemporaryDirectory() as out_dir:
            trainer = tb.make_trl_trainer(model, task, cfg, output_dir=out_dir, callbacks=[acc])
            trainer.train()
        hist = dict(acc.history)
        hist["reward"] = [x["reward"] for x in trainer.state.log_history if "reward" in x]
    return {"trainer": args.one, "seed": args.seed, "threads": args.threads,
            "rss_before_mb": rss_before, "peak_rss_mb": _rss_mb(), **hist}


# --------------------------------------------------------------- summary (parent) ---
def summarize(run: dict) -> dict:
    steps_s = run["step_seconds"]
    out = {"ms_per_step": 1000 * statistics.median(steps_s),
           "completions_per_s": 128 / statistics.median(steps_s),
           "final_accuracy": run["eval_accuracy"][-1], "steps": len(steps_s),
           "peak_rss_mb": run["peak_rss_mb"]}
    for level in LEVELS:
        hit = [i for i, a in enumerate(run["eval_accuracy"]) if a >= level]
        out[f"s_to_{level:.2f}"] = run["eval_wall"][hit[0]] if hit else None
        out[f"steps_to_{level:.2f}"] = run["eval_step"][hit[0]] if hit else None
    return out


def _median(xs):
    """Median over seeds; None (never reached) counts as +inf. Returns None if the median is."""
    vals = sorted(float("inf") if x is None else x for x in xs)
    m = statistics.median(vals)
    return None if m == float("inf") else m


def table(summaries: dict[str, list[dict]]) -> str:
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
                  fmt(_median([r["peak_rss_mb"] for r in runs]), ".0f"),
                  f"{reached}/{len(runs)}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        result = run_one(args)
        with open(args.out, "w") as f:
            json.dump(result, f)
        return
    runs, summaries = [], {t: [] for t in args.trainers}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for trainer in args.trainers:
                out = os.path.join(tmp, f"{trainer}_{seed}.json")
                cmd = [sys.executable, os.path.abspath(__file__), "--one", trainer,
                       "--seed", str(seed), "--out", out, "--steps", str(args.steps),
                       "--lr", str(args.lr), "--eval-every", str(args.eval_every),
                       "--temperature", str(args.temperature), "--mu", str(args.mu),
                       "--warmup", str(args.warmup),
                       "--threads", str(args.threads)]
                if args.stop_at:
                    cmd += ["--stop-at", str(args.stop_at)]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                           TOKENIZERS_PARALLELISM="false")
                subprocess.run(cmd, check=True, env=env)
                with open(out) as f:
                    run = json.load(f)
                s = summarize(run)
                runs.append({**run, "summary": s})
                summaries[trainer].append(s)
                print(f"{trainer:18s} seed {seed}: {s['ms_per_step']:.1f} ms/step, "
                      f"90% at {s['s_to_0.90']} s, 95% at {s['s_to_0.95']} s, "
                      f"final {s['final_accuracy']:.3f} after {s['steps']} steps", flush=True)
    print(f"\nGRPO on a+b, GPT-2 2x128, 16 prompts x 8 completions, lr {args.lr}, "
          f"temperature {args.temperature}, mu {args.mu}, "
          f"seeds {args.seeds}, <= {args.steps} steps, {args.threads} thread(s); "
          f"medians over seeds ({time.perf_counter() - t0:.0f} s in total)\n")
    print(table(summaries))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f)


if __name__ == "__main__":
    main()
