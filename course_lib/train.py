"""Command line: train the warm-started TinyGPT with GRPO, PPO, REINFORCE/RLOO or DPO.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO" (the benchmark runs this once per
algorithm and seed, each in its own process so that peak memory is per run).

    python -m course_lib.train grpo --seed 0 --json out.json
    python -m course_lib.train ppo --seed 1 --json ppo.json --steps 300 --lr 5e-4
    python -m course_lib.train grpo --set beta=0.04 --set loss_type=dr_grpo --json x.json

Prints a progress bar and a summary, and writes a JSON file with: held-out accuracy before
and after, steps, samples used, wall seconds (training only; the warm start is loaded or
built before the clock starts), time to 90% / 95% held-out accuracy (wall seconds of the
first evaluation at or above it, evaluation time included), peak memory and the parameters
held in memory (policy, critic, reference), the configs and the evaluation curve.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the peak resident set size
of the whole process (Python, torch and all tensors; tracemalloc would miss torch's C++
allocations). ``peak_rss_before_train_mb`` is the same measure just before training, so
the difference is what training added.

Threads: ``--threads 1`` by default. The matrices here are tiny (128 sequences x 9 tokens
x width 64); intra-op parallelism costs more in synchronisation than it saves, and on a
shared 2-core machine a second thread competes with other processes. Measured on this
machine: one forward+backward of the GRPO batch took about the same or less with one
thread than with two (see the benchmark's README section).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict, fields

import torch

from course_lib.model import ModelConfig
from course_lib.sft import SFTConfig, warm_start
from course_lib.tasks import AdditionTask, MultiStepSumTask
from course_lib.trainers import TRAINERS, evaluate

__all__ = ["main", "run", "make_task", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def make_task(name: str, seed: int = 0):
    """``"addition"`` (the running example) or ``"multisum"`` (the R1 task)."""
    if name == "addition":
        return AdditionTask(seed=seed)
    if name == "multisum":
        return MultiStepSumTask(seed=seed)
    raise ValueError(f"unknown task {name!r}; expected 'addition' or 'multisum'")


def _parse_value(text: str, current):
    if current is None or isinstance(current, str):
        for conv in (int, float):
            try:
                return conv(text)
            except ValueError:
                pass
        return None if text == "None" else text
    if isinstance(current, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(current, tuple):
        return tuple(float(x) for x in text.split(","))
    return type(current)(text)


def time_to_accuracy(history: dict, target: float) -> dict | None:
    """Wall seconds, step and samples of the first evaluation with accuracy >= target."""
    for s, a, w, n in zip(history["eval_step"], history["eval_accuracy"],
                          history["eval_wall"], history["eval_samples"], strict=True):
        if a >= target:
            return {"wall": w, "step": s, "samples": n}
    return None


def run(algo: str, seed: int = 0, task_name: str = "addition", overrides: dict | None = None,
        model_config: ModelConfig | None = None, progress: bool = True) -> dict:
    """Warm start, train with ``algo``, evaluate; returns the metrics dict the CLI writes."""
    if algo not in TRAINERS:
        raise ValueError(f"unknown algorithm {algo!r}; expected one of {sorted(TRAINERS)}")
    trainer_cls, config_cls = TRAINERS[algo]
    task = make_task(task_name)  # the split is fixed (seed 0); --seed drives the run
    policy = warm_start(task, seed=0, model_config=model_config, sft_config=SFTConfig())
    cfg = config_cls(seed=seed, **(overrides or {}))
    rss_before = peak_rss_mb()
    trainer = trainer_cls(policy, task, cfg)
    t0 = time.perf_counter()
    history = trainer.train(progress=progress)
    wall = time.perf_counter() - t0
    acc_before, acc_after = history["eval_accuracy"][0], history["eval_accuracy"][-1]
    if history["eval_step"][-1] != trainer.step_count:  # make sure "after" is final
        acc_after = evaluate(policy, task)
    return {
        "algorithm": algo, "seed": seed, "task": task_name,
        "accuracy_before": acc_before, "accuracy_after": acc_after,
        "steps": trainer.step_count, "samples": trainer.samples_used,
        "wall_seconds": wall,
        "time_to_90": time_to_accuracy(history, 0.90),
        "time_to_95": time_to_accuracy(history, 0.95),
        "peak_rss_mb": peak_rss_mb(), "peak_rss_before_train_mb": rss_before,
        "memory_measure": "resource.getrusage(RUSAGE_SELF).ru_maxrss (whole process)",
        "parameters_held": trainer.parameters_held(),
        "reference_logprobs_precomputed": algo == "dpo",
        "threads": torch.get_num_threads(),
        "config": asdict(cfg), "model_config": asdict(policy.config),
        "warm_start": {k: v for k, v in policy.warm_start_info.items() if k != "cache_path"},
        "eval": {k: history[k] for k in ("eval_step", "eval_samples", "eval_wall",
                                         "eval_accuracy")},
        "final_reward_mean": history["reward_mean"][-1] if "reward_mean" in history else None,
        "response_len": history.get("response_len"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m course_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("algorithm", choices=sorted(TRAINERS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the training run")
    parser.add_argument("--json", metavar="OUT", help="write the final metrics here")
    parser.add_argument("--task", default="addition", choices=["addition", "multisum"])
    parser.add_argument("--steps", type=int, help="training steps")
    parser.add_argument("--lr", type=float, help="policy learning rate")
    parser.add_argument("--eval-every", type=int, help="steps between held-out evaluations")
    parser.add_argument("--stop-at", type=float, help="stop once held-out accuracy >= this")
    parser.add_argument("--n-layer", type=int, help="TinyGPT blocks")
    parser.add_argument("--n-embd", type=int, help="TinyGPT width")
    parser.add_argument("--n-head", type=int, help="TinyGPT heads")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="any other config field, e.g. --set beta=0.04 (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    _, config_cls = TRAINERS[args.algorithm]
    defaults = {f.name: f.default for f in fields(config_cls)}
    overrides: dict = {}
    for name, value in (("steps", args.steps), ("lr", args.lr),
                        ("eval_every", args.eval_every), ("stop_at_accuracy", args.stop_at)):
        if value is not None:
            overrides[name] = value
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            parser.error(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                         f"{', '.join(sorted(defaults))}")
        overrides[key] = _parse_value(value, defaults[key])
    mk = {k: v for k, v in (("n_layer", args.n_layer), ("n_embd", args.n_embd),
                            ("n_head", args.n_head)) if v is not None}
    task = make_task(args.task)
    mcfg = None
    if mk:
        mcfg = ModelConfig(block_size=max(32, task.prompt_len + task.max_new_tokens), **mk)
    try:
        result = run(args.algorithm, args.seed, args.task, overrides, mcfg,
                     progress=not args.no_progress)
    except ValueError as e:
        parser.error(str(e))
    t90 = result["time_to_90"]
    print(f"{args.algorithm} seed {args.seed}: held-out accuracy {result['accuracy_before']:.3f}"
          f" -> {result['accuracy_after']:.3f} in {result['steps']} steps, "
          f"{result['samples']} samples, {result['wall_seconds']:.1f} s"
          + (f" (90% at {t90['wall']:.1f} s)" if t90 else "")
          + f"; peak RSS {result['peak_rss_mb']:.0f} MiB; params {result['parameters_held']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
