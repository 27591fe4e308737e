"""GRPO on the course's running example (a+b) with Hugging Face TRL, on 1 or N processes.

The course's task, reward, warm start and settings (course_lib.trl_bridge), trained by
``trl.GRPOTrainer``. The same file runs as a plain script or under ``accelerate launch``,
which starts one process per device and makes TRL split every batch of completions across
them (data parallel: each process generates and scores its share, gradients are averaged).

    python scripts/trl_grpo.py --steps 50                                    # 1 process
    accelerate launch --num_processes 2 --cpu scripts/trl_grpo.py --steps 20 # 2 CPU procs
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml scripts/trl_grpo.py
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml scripts/trl_grpo.py --gpu

Chapter: "Scaling up with TRL" (book/07_trl.ipynb); the distributed smoke test
(tests/test_trl_distributed.py) runs the 2-process CPU command. ``--json`` writes the
per-step mean reward, held-out accuracy before/after and timings (main process only).
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated

import tyro

from course_lib.trainers.grpo import GRPOConfig


@dataclass
class Script:
    """GRPO on the running example (a+b) with TRL's GRPOTrainer, on 1 or N processes."""

    config: Annotated[GRPOConfig, tyro.conf.arg(name="")] = field(
        default_factory=lambda: GRPOConfig(steps=50, lr=3e-4, temperature=0.7, eval_every=0))
    """The course's GRPO settings (this script's recipe: the chapter's), mapped to TRL's."""
    threads: int = 1
    """torch threads per process."""
    gpu: bool = False
    """Train on the accelerator, not the CPU."""
    bf16: bool = False
    """bf16 mixed precision (GPU)."""
    output_dir: str = os.path.join("_build", "trl_grpo")
    """Where TRL may write (nothing is saved)."""
    json: str | None = None
    """Write the results here (main process)."""


def main(argv=None) -> dict:
    args = tyro.cli(Script, args=argv)
    cfg = args.config
    import torch
    from accelerate import PartialState
    from transformers.utils import logging as hf_logging

    from course_lib import trl_bridge as tb
    from course_lib.tasks import AdditionTask

    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    # which process am I, how many are there (set by accelerate launch); on the CPU the
    # processes talk through gloo
    state = PartialState(cpu=not args.gpu)
    task = AdditionTask(seed=0)  # the running example: 2000 train / 500 held-out prompts
    # the first process builds (or loads) the cached warm start, then the others load it
    with state.main_process_first():
        model = tb.warm_start_hf(task, seed=cfg.seed)
    accuracy = tb.HeldOutAccuracy(task, eval_every=cfg.eval_every,
                                  completions_per_step=cfg.prompts_per_step * cfg.group_size)
    overrides = {}
    if args.gpu:
        overrides.update(use_cpu=False, bf16=args.bf16)
    trainer = tb.make_trl_trainer(model, task, cfg, output_dir=args.output_dir,
                                  num_processes=state.num_processes, callbacks=[accuracy],
                                  **overrides)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "reward" in h]
    result = {
        "num_processes": state.num_processes,
        "steps": trainer.state.global_step,
        "reward": [h["reward"] for h in logs],
        "accuracy_before": accuracy.history["eval_accuracy"][0],
        "accuracy_after": accuracy.history["eval_accuracy"][-1],
        "eval_step": accuracy.history["eval_step"],
        "eval_accuracy": accuracy.history["eval_accuracy"],
        "train_seconds": accuracy.history["eval_wall"][-1],
        "wall_seconds": wall,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "config": asdict(args),
    }
    if state.is_main_process:
        r = result["reward"]
        k = max(1, min(5, len(r) // 2))
        print(f"TRL GRPO on {state.num_processes} process(es), {result['steps']} steps: "
              f"mean reward {sum(r[:k]) / k:.3f} (first {k}) -> {sum(r[-k:]) / k:.3f} "
              f"(last {k}); held-out accuracy {result['accuracy_before']:.3f} -> "
              f"{result['accuracy_after']:.3f}; {wall:.1f} s")
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
    state.wait_for_everyone()
    return result


if __name__ == "__main__":
    main()
