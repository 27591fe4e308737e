"""Command line: train the warm-started TinyGPT with GRPO, PPO, REINFORCE/RLOO or DPO.

Chapter: "Comparing PPO, GRPO, REINFORCE and DPO" (the benchmark runs this once per
algorithm and seed, each in its own process so that peak memory is per run).

    python -m course_lib.train grpo        # the fast recipe (course_lib.recipes): >= 95%
    python -m course_lib.train grpo --seed 3 --json out.json
    python -m course_lib.train ppo --seed 1 --steps 300 --lr 5e-4 --json ppo.json
    python -m course_lib.train grpo --beta 0.04 --loss-type dr_grpo --model.n-layer 3
    python -m course_lib.train grpo --help    # every option, its default and its meaning

One subcommand per trainer; its options are the fields of the trainer's config
(``GRPOConfig`` ...) and of :class:`Run`, with the defaults and docstrings written there
(the command line is generated from those dataclasses by tyro, as in CleanRL). The
``grpo`` subcommand starts from :mod:`course_lib.recipes` instead (its model, warm start
and GRPO settings, which reach 95% held-out accuracy); the others from the configs'
defaults, the chapters' small TinyGPT.

Prints a progress bar and a summary, and writes a JSON file with: held-out accuracy before
and after, steps, samples used, wall seconds of ``train()`` (the warm start is loaded or
built before the clock starts), time to 90% / 95% held-out accuracy (the first evaluation at
or above it: training seconds, evaluation excluded, step and samples), peak memory and the
parameters held in memory (policy, critic, reference), the configs and the evaluation curve.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the peak resident set size
of the whole process (Python, torch and all tensors; tracemalloc would miss torch's C++
allocations). ``peak_rss_before_train_mb`` is the same measure just before training, so
the difference is what training added.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, Generic, Literal, TypeVar, Union

import torch
import tyro

from course_lib import recipes
from course_lib.evaluate import evaluate
from course_lib.model import ModelConfig
from course_lib.sft import SFTConfig, warm_start
from course_lib.tasks import TASKS
from course_lib.trainers import TRAINERS

__all__ = ["main", "run", "Run", "peak_rss_mb", "time_to_accuracy"]

ConfigT = TypeVar("ConfigT")


@dataclass
class Run(Generic[ConfigT]):
    """Train the warm-started TinyGPT and report held-out accuracy, time and memory."""

    config: Annotated[ConfigT, tyro.conf.arg(name="")]
    """The trainer's settings (their options have no prefix)."""
    task: Literal[tuple(TASKS)] = "addition"
    """The task; its split is fixed (seed 0), --seed drives the run."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Size of the TinyGPT (its warm start is cached per size)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """The supervised warm start's settings (cached per settings)."""
    json: str | None = None
    """Write the final metrics to this file."""
    threads: int = 1
    """torch threads: the matrices are tiny, one is as fast and shares the machine."""
    progress: bool = True
    """Show a progress bar."""


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def time_to_accuracy(history: dict, target: float) -> dict | None:
    """Training seconds, step and samples of the first evaluation with accuracy >= target."""
    for s, a, w, n in zip(history["eval_step"], history["eval_accuracy"],
                          history["eval_wall"], history["eval_samples"], strict=True):
        if a >= target:
            return {"wall": w, "step": s, "samples": n}
    return None


def run(algo: str, config, task_name: str = "addition", model_config: ModelConfig | None = None,
        progress: bool = True, sft_config: SFTConfig | None = None) -> dict:
    """Warm start, train with ``algo`` and ``config``, evaluate; returns the metrics dict
    the command line writes."""
    if algo not in TRAINERS:
        raise ValueError(f"unknown algorithm {algo!r}; expected one of {sorted(TRAINERS)}")
    trainer_cls, _ = TRAINERS[algo]
    task = TASKS[task_name](seed=0)
    policy = warm_start(task, seed=0, model_config=model_config,
                        sft_config=sft_config or SFTConfig())
    rss_before = peak_rss_mb()
    trainer = trainer_cls(policy, task, config)
    t0 = time.perf_counter()
    history = trainer.train(progress=progress)
    wall = time.perf_counter() - t0
    acc_before, acc_after = history["eval_accuracy"][0], history["eval_accuracy"][-1]
    if history["eval_step"][-1] != trainer.step_count:  # make sure "after" is final
        acc_after = evaluate(policy, task)
    return {
        "algorithm": algo, "seed": config.seed, "task": task_name,
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
        "config": asdict(config), "model_config": asdict(policy.config),
        "sft_config": asdict(sft_config or SFTConfig()),
        "warm_start": {k: v for k, v in policy.warm_start_info.items() if k != "cache_path"},
        "eval": {k: history[k] for k in ("eval_step", "eval_samples", "eval_wall",
                                         "eval_accuracy")},
        "final_reward_mean": history["reward_mean"][-1] if "reward_mean" in history else None,
        "response_len": history.get("response_len"),
    }


def _subcommands():
    """One subcommand per trainer, described by the first line of its module docstring."""
    options = []
    for name, (trainer_cls, config_cls) in TRAINERS.items():
        doc = sys.modules[trainer_cls.__module__].__doc__.split("\n", 1)[0]
        default = (Run(config=recipes.grpo_config(), model=recipes.model_config(),
                       sft=recipes.sft_config()) if name == "grpo"
                   else Run(config=config_cls()))
        options.append(Annotated[Run[config_cls],
                                 tyro.conf.subcommand(name, description=doc, default=default)])
    return Union[tuple(options)]  # noqa: UP007 (a Union built at run time)


@contextlib.contextmanager
def _dedented_field_docstrings():
    """Field docstrings as :func:`inspect.cleandoc` reads them, while tyro builds the parser.

    tyro 1.0.17 joins the lines of a field's docstring before it dedents them, so each
    indented continuation line of a multi-line docstring (every one in the configs) starts
    a new line in ``--help``. Dedenting first lets tyro re-wrap the text to the terminal.
    """
    import tyro._docstrings as docstrings

    parse = docstrings.parse_docstring_from_object
    docstrings.parse_docstring_from_object = lambda obj: {
        name: inspect.cleandoc(doc) for name, doc in parse(obj).items()}
    try:
        yield
    finally:
        docstrings.parse_docstring_from_object = parse


def main(argv: list[str] | None = None) -> dict:
    prog = "python -m course_lib.train"
    with _dedented_field_docstrings():
        args = tyro.cli(_subcommands(), prog=prog, args=argv,
                        description=__doc__.split("\n\n")[0])
    algo = next(k for k, (_, c) in TRAINERS.items() if isinstance(args.config, c))
    torch.set_num_threads(args.threads)
    try:
        args.config.validate()
        result = run(algo, args.config, args.task, args.model, progress=args.progress,
                     sft_config=args.sft)
    except ValueError as e:
        print(f"{prog} {algo}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    t90 = result["time_to_90"]
    print(f"{algo} seed {result['seed']}: held-out accuracy {result['accuracy_before']:.3f}"
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
