"""Benchmark: GRPO, PPO, REINFORCE (RLOO) and DPO on the running example, and the R1 experiment.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO" renders the JSON this writes, and
"The R1 connection" the second experiment.

    python benchmarks/bench_training.py compare --seeds 0 1 2
    python benchmarks/bench_training.py r1 --seeds 0 1 2
    python benchmarks/bench_training.py threads   # 1 vs 2 torch threads, GRPO step time

``compare``: every algorithm starts from the same cached warm start (AdditionTask seed 0,
TinyGPT seed 0), gets the same sample budget (``--samples``, default 128 per step x 200
steps = 25 600 completions; DPO spends its budget once, on building preference pairs) and
is run once per seed, each run in its own process via ``python -m course_lib.train`` (so
peak memory is per run). Printed: medians over seeds with [min, max], for held-out accuracy
at 25/50/100% of the budget, wall seconds, time to 90% / 95%, peak RSS, and the parameters
each method holds. All numbers are measured; nothing is simulated.

``r1``: MultiStepSumTask (four two-digit numbers; the warm start imitates a 50/50 mix of
direct answers and written partial sums), GRPO rewarding only the final answer. Reports,
over training, held-out accuracy, mean response length, and the share of step-by-step
completions, and the warm model's accuracy per format; says whether length and accuracy
rose together. The conclusion printed is computed from the numbers, whichever way they go.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ("grpo", "ppo", "reinforce", "dpo")


def _spread(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "mean": statistics.fmean(xs),
            "min": min(xs), "max": max(xs), "n": len(xs)}


def _fmt(s, spec=".3f", scale=1.0):
    if s is None:
        return "not reached"
    return (f"{s['median'] * scale:{spec}} [{s['min'] * scale:{spec}}, "
            f"{s['max'] * scale:{spec}}]")


def _write_json(result: dict, json_out: str | None) -> None:
    """Write ``result`` to ``json_out`` (creating its folder), if a path is given."""
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        with open(json_out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {json_out}")


def run_one(algo: str, seed: int, args: list[str], threads: int = 1) -> dict:
    """One training run in a fresh process; returns its JSON metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run.json")
        cmd = [sys.executable, "-m", "course_lib.train", algo, "--seed", str(seed),
               "--json", out, "--no-progress", "--threads", str(threads), *args]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)


def accuracy_at(run: dict, samples: int) -> float | None:
    """Held-out accuracy of the last evaluation with at most ``samples`` samples used."""
    best = None
    for n, a in zip(run["eval"]["eval_samples"], run["eval"]["eval_accuracy"], strict=True):
        if n <= samples:
            best = a
    return best


def algo_args(algo: str, samples: int, eval_every: int) -> list[str]:
    """CLI arguments giving ``algo`` the sample budget ``samples``."""
    per_step = 128  # GRPO/RLOO 16 prompts x 8; PPO 128 prompts x 1
    if algo == "dpo":
        # all of the budget goes into pair building: prompts x 8 samples each
        n_prompts = min(2000, samples // 8)
        return ["--steps", "300", "--eval-every", str(eval_every),
                "--pair-prompts", str(n_prompts)]
    return ["--steps", str(samples // per_step), "--eval-every", str(eval_every)]


def compare(seeds, samples: int, eval_every: int, json_out: str | None, threads: int) -> dict:
    runs: dict[str, list[dict]] = {a: [] for a in ALGOS}
    for algo in ALGOS:
        for seed in seeds:
            t = time.perf_counter()
            r = run_one(algo, seed, algo_args(algo, samples, eval_every), threads)
            runs[algo].append(r)
            print(f"  {algo:9s} seed {seed}: {r['accuracy_before']:.3f} -> "
                  f"{r['accuracy_after']:.3f}, {r['wall_seconds']:.1f} s train "
                  f"({time.perf_counter() - t:.0f} s with start-up)", flush=True)
    checkpoints = [samples // 4, samples // 2, samples]
    table = {}
    for algo, rs in runs.items():
        table[algo] = {
            "accuracy_before": _spread([r["accuracy_before"] for r in rs]),
            "accuracy_after": _spread([r["accuracy_after"] for r in rs]),
            "accuracy_at_samples": {str(c): _spread([accuracy_at(r, c) for r in rs])
                                    for c in checkpoints},
            "samples": _spread([r["samples"] for r in rs]),
            "wall_seconds": _spread([r["wall_seconds"] for r in rs]),
            "time_to_90": _spread([r["time_to_90"]["wall"] if r["time_to_90"] else None
                                   for r in rs]),
            "time_to_95": _spread([r["time_to_95"]["wall"] if r["time_to_95"] else None
                                   for r in rs]),
            "reached_90": sum(r["time_to_90"] is not None for r in rs),
            "reached_95": sum(r["time_to_95"] is not None for r in rs),
            "peak_rss_mb": _spread([r["peak_rss_mb"] for r in rs]),
            "train_rss_mb": _spread([r["peak_rss_mb"] - r["peak_rss_before_train_mb"]
                                     for r in rs]),
            "parameters_held": rs[0]["parameters_held"],
            "models_held": sum(v > 0 for v in rs[0]["parameters_held"].values()),
        }
    print(f"\nHeld-out accuracy (500 prompts, greedy), medians over seeds {list(seeds)} "
          f"[min, max]; budget {samples} completions; {threads} thread(s)")
    head = ("| method | before | " + " | ".join(f"@{c} samples" for c in checkpoints)
            + " | train wall s | to 90% s | to 95% s | peak RSS MiB | params held "
            "(policy/critic/ref) |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for algo, row in table.items():
        ph = row["parameters_held"]
        print(f"| {algo} | {_fmt(row['accuracy_before'])} | "
              + " | ".join(_fmt(row["accuracy_at_samples"][str(c)]) for c in checkpoints)
              + f" | {_fmt(row['wall_seconds'], '.1f')} | {_fmt(row['time_to_90'], '.1f')}"
              f" ({row['reached_90']}/{len(seeds)}) | {_fmt(row['time_to_95'], '.1f')}"
              f" ({row['reached_95']}/{len(seeds)}) | {_fmt(row['peak_rss_mb'], '.0f')} | "
              f"{ph['policy']}/{ph['critic']}/{ph['reference']} |")
    result = {"seeds": list(seeds), "samples": samples, "eval_every": eval_every,
              "threads": threads, "table": table, "runs": runs,
              "load_average_at_end": os.getloadavg(),
              "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}
    _write_json(result, json_out)
    return result


def r1_experiment(seeds, steps: int, eval_every: int, json_out: str | None,
                  threads: int) -> dict:
    """GRPO on MultiStepSumTask: do response length and accuracy rise together?"""
    import torch

    from course_lib.evaluate import greedy_completions
    from course_lib.model import sample
    from course_lib.sft import warm_start
    from course_lib.tasks import MultiStepSumTask
    from course_lib.trainers import GRPOConfig, GRPOTrainer

    torch.set_num_threads(threads)
    task = MultiStepSumTask(seed=0)

    def held_out(policy):
        texts = greedy_completions(policy, task, task.test)
        ok = [task.is_correct(p, t) for p, t in zip(task.test, texts, strict=True)]
        step = [task.is_step_by_step(t) for t in texts]
        acc_step = [o for o, s in zip(ok, step, strict=True) if s]
        acc_direct = [o for o, s in zip(ok, step, strict=True) if not s]
        return {"accuracy": sum(ok) / len(ok),
                "response_len": sum(len(t) for t in texts) / len(texts),
                "step_by_step_frac": sum(step) / len(step),
                "accuracy_step_by_step": sum(acc_step) / len(acc_step) if acc_step else None,
                "accuracy_direct": sum(acc_direct) / len(acc_direct) if acc_direct else None}

    def forced_format_accuracy(policy, fmt: str, n: int = 500):
        """Sampled accuracy (temperature 1) of completions that chose ``fmt``."""
        prompts = [p for p in task.test[:n] for _ in range(4)]
        out = sample(policy, task.encode_prompts(prompts), task.max_new_tokens,
                     generator=torch.Generator().manual_seed(0))
        texts = [task.decode(t) for t in out.tokens]
        sel = [(p, t) for p, t in zip(prompts, texts, strict=True)
               if task.is_step_by_step(t) == (fmt == "steps")]
        return (sum(task.is_correct(p, t) for p, t in sel) / len(sel)) if sel else None, len(sel)

    runs = []
    for seed in seeds:
        policy = warm_start(task, seed=0)
        start = held_out(policy)
        fmt = {f: forced_format_accuracy(policy, f) for f in ("steps", "direct")}
        trainer = GRPOTrainer(policy, task, GRPOConfig(seed=seed, steps=steps, eval_every=0,
                                                       lr=5e-4))
        curve = [{"step": 0, **start}]
        t0 = time.perf_counter()
        while trainer.step_count < steps:
            trainer.config.steps = eval_every
            trainer.train(progress=False)
            curve.append({"step": trainer.step_count, **held_out(policy)})
        wall = time.perf_counter() - t0
        h = trainer.history
        runs.append({"seed": seed, "curve": curve, "wall_seconds": wall,
                     "warm_sampled_accuracy_by_format": {
                         f: {"accuracy": a, "n": n} for f, (a, n) in fmt.items()},
                     "train_response_len": h["response_len"],
                     "train_step_by_step_frac": h["step_by_step_frac"],
                     "train_reward_mean": h["reward_mean"]})
        print(f"seed {seed}: warm sampled accuracy, step-by-step "
              f"{fmt['steps'][0]} (n={fmt['steps'][1]}), direct {fmt['direct'][0]} "
              f"(n={fmt['direct'][1]}); {wall:.0f} s")
        print("| step | held-out acc | mean response len | step-by-step share | "
              "acc step-by-step | acc direct |")
        print("|---|---|---|---|---|---|")
        def f(x):
            return "-" if x is None else f"{x:.3f}"

        for c in curve:
            print(f"| {c['step']} | {c['accuracy']:.3f} | {c['response_len']:.2f} | "
                  f"{c['step_by_step_frac']:.3f} | {f(c['accuracy_step_by_step'])} | "
                  f"{f(c['accuracy_direct'])} |")
    # did length and accuracy rise together? Pearson correlation over the eval points.
    verdicts = []
    for r in runs:
        acc = [c["accuracy"] for c in r["curve"]]
        ln = [c["response_len"] for c in r["curve"]]
        corr = statistics.correlation(acc, ln) if len(set(ln)) > 1 and len(set(acc)) > 1 \
            else 0.0
        r["corr_len_acc"] = corr
        verdicts.append((acc[-1] - acc[0], ln[-1] - ln[0], corr))
    print("\nseed | accuracy change | response length change | corr(length, accuracy)")
    for r, (da, dl, c) in zip(runs, verdicts, strict=True):
        print(f"{r['seed']} | {da:+.3f} | {dl:+.2f} | {c:+.2f}")
    together = sum(da > 0 and dl > 0 for da, dl, _ in verdicts)
    med_corr = statistics.median(c for _, _, c in verdicts)
    print(f"both higher at the end than at the start in {together} of {len(runs)} seeds; "
          f"median correlation of length and accuracy over the evaluations {med_corr:+.2f} "
          f"({'they moved together' if med_corr > 0.5 else 'no strong co-movement'})")
    result = {"task": repr(task), "steps": steps, "runs": runs,
              "median_corr_len_acc": med_corr,
              "load_average_at_end": os.getloadavg(),
              "rose_together": together, "n_seeds": len(runs)}
    _write_json(result, json_out)
    return result


def threads_benchmark(repeats: int = 30) -> dict:
    """Median seconds of one GRPO step (sample + update) with 1 and 2 torch threads."""
    import torch

    from course_lib.sft import warm_start
    from course_lib.tasks import AdditionTask
    from course_lib.trainers import GRPOConfig, GRPOTrainer

    task = AdditionTask(seed=0)
    out = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        tr = GRPOTrainer(warm_start(task, seed=0), task, GRPOConfig(seed=0))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            tr.step()
            times.append(time.perf_counter() - t)
        out[n] = statistics.median(times[5:])
        print(f"{n} thread(s): median GRPO step {out[n] * 1000:.1f} ms")
    return out


#: The GRPO setting that reaches 90% held-out accuracy on the running example: a 3-block
#: TinyGPT (its own cached warm start) sampled at temperature 0.7. The 2-block default of
#: the chapters plateaus near 0.8 (benchmarks/results/grpo_default_1500steps_seed0.json).
TARGET_ARGS = ["--model.n-layer", "3", "--temperature", "0.7"]


def target(seeds, steps: int, stop_at: float, eval_every: int, threads: int) -> list[dict]:
    """Issue 3's target: GRPO from the warm start to ``stop_at`` held-out accuracy, timed."""
    runs = []
    for seed in seeds:
        run = run_one("grpo", seed, [*TARGET_ARGS, "--steps", str(steps), "--stop-at-accuracy",
                                     str(stop_at), "--eval-every", str(eval_every)], threads)
        runs.append(run)
        print(f"  grpo seed {seed}: {run['accuracy_before']:.3f} -> "
              f"{run['accuracy_after']:.3f} in {run['steps']} steps, "
              f"{run['wall_seconds']:.1f} s", flush=True)
    reached = [r["wall_seconds"] for r in runs if r["accuracy_after"] >= stop_at]
    before = _fmt(_spread([r["accuracy_before"] for r in runs]))
    print(f"\nGRPO ({' '.join(TARGET_ARGS)}): warm start {before}; "
          f"reached {stop_at:.0%} in {len(reached)}/{len(runs)} seeds; "
          f"wall seconds to it {_fmt(_spread(reached), '.1f')}")
    return runs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="GRPO vs PPO vs REINFORCE vs DPO")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    c.add_argument("--samples", type=int, default=128 * 200, help="sample budget per run")
    c.add_argument("--eval-every", type=int, default=10)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "training.json"))
    r = sub.add_parser("r1", help="length vs accuracy under GRPO on multi-step sums")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--eval-every", type=int, default=50)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "r1.json"))
    sub.add_parser("threads", help="GRPO step time with 1 and 2 threads")
    t = sub.add_parser("target", help="GRPO wall time to 90%% held-out accuracy, per seed")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--stop-at", type=float, default=0.9)
    t.add_argument("--eval-every", type=int, default=50)
    t.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "compare":
        compare(args.seeds, args.samples, args.eval_every, args.json, args.threads)
    elif args.cmd == "r1":
        r1_experiment(args.seeds, args.steps, args.eval_every, args.json, args.threads)
    elif args.cmd == "target":
        target(args.seeds, args.steps, args.stop_at, args.eval_every, args.threads)
    else:
        threads_benchmark()


if __name__ == "__main__":
    main()
