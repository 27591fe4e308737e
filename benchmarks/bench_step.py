"""Milliseconds per GRPO step, with and without the on-policy shortcut, on the TRL chapter's GPT-2.

Two trainers from the same warm start (``course_lib.trl_bridge.warm_start_hf``, 2 layers,
width 128), 16 prompts x 8 completions, temperature 0.7; one has
``reuse_rollout_forward=True`` (backpropagate through the sampling pass), the other
``False`` (sample without gradient, then a second forward pass). They take steps in turn,
so both see the same machine load; the first ``--warmup`` steps are dropped and the median
is printed.

    python benchmarks/bench_step.py               # 300 steps each, 2 threads

Results: ``benchmarks/results/README.md``.
"""

import argparse
import copy
import statistics
import time

import torch
from transformers.utils import logging as hf_logging

from course_lib import trl_bridge as tb
from course_lib.tasks import AdditionTask
from course_lib.trainers.grpo import GRPOConfig, GRPOTrainer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    task = AdditionTask(seed=0)
    model = tb.warm_start_hf(task, seed=0).train()
    trainers = {reuse: GRPOTrainer(copy.deepcopy(model), task, GRPOConfig(
        lr=3e-4, adv_eps=1e-4, temperature=0.7, max_new_tokens=4, seed=0,
        reuse_rollout_forward=reuse)) for reuse in (True, False)}
    seconds = {reuse: [] for reuse in trainers}
    for _ in range(args.steps):
        for reuse, trainer in trainers.items():
            t = time.perf_counter()
            trainer.step()
            seconds[reuse].append(time.perf_counter() - t)
    for reuse, s in seconds.items():
        print(f"reuse_rollout_forward={reuse!s:5}: "
              f"{1000 * statistics.median(s[args.warmup:]):.1f} ms per step (median of "
              f"{len(s) - args.warmup}, {args.threads} threads)")


if __name__ == "__main__":
    main()
