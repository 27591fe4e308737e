"""Benchmark: GRPO on 10-armed Bernoulli bandits (issue 3's measured target).

Target: on 10-armed bandits whose best arm leads the second by >= 0.1, GRPO with G = 8
puts >= 0.9 probability on the best arm within 300 steps in >= 95% of 20 seeds, and the
20 runs together take < 5 s.

Two families of bandits, 20 each (bandit s and run s both use seed s):
  random     success probabilities uniform on [0, 1], redrawn until the gap is >= 0.1
             (course_lib.bandit.make_bandit)
  gap = 0.1  the same draws scaled by 0.8, then the best arm set to second + 0.1 exactly
             (the hardest bandits the target allows)
Methods: GRPO with course_lib.bandit's defaults (G = 8, mu = 1 as in DeepSeekMath, Adam
lr 0.1, no KL), the 20 runs computed side by side (grpo_bandit_batch, identical results
to 20 separate runs) and one after another (grpo_bandit); GRPO with mu = 2, clip 0.2 (the
ps3 reference train_bandit_grpo); REINFORCE with a moving-average baseline (same G, lr,
steps) for contrast.

Run:  python benchmarks/bench_bandit.py [--repeats 3] [--seeds 20] [--skip-serial]
Times are medians over --repeats runs of the whole 20-seed sweep, one thread.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_lib.bandit import (
    BanditGRPOConfig,
    grpo_bandit,
    grpo_bandit_batch,
    make_bandit,
    reinforce_bandit,
)


def families(n: int) -> dict[str, torch.Tensor]:
    rand = torch.stack([make_bandit(10, min_gap=0.1, seed=s).arm_probs for s in range(n)])
    hard = rand * 0.8  # (n, 10)
    top2 = hard.topk(2, dim=1)
    hard[torch.arange(n), top2.indices[:, 0]] = top2.values[:, 1] + 0.1
    return {"random, gap >= 0.1": rand, "gap = 0.1 exactly": hard}


def first_hit(p_best: torch.Tensor) -> float:
    """First step (1-based) at which p_best >= 0.9, or inf."""
    hits = (p_best >= 0.9).nonzero()
    return float(hits[0, 0] + 1) if len(hits) else float("inf")


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--skip-serial", action="store_true",
                    help="skip the one-after-another GRPO timing (slow with many seeds)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = BanditGRPOConfig()  # G = 8, steps = 300
    seeds = list(range(args.seeds))
    grpo_bandit_batch(torch.full((2, 10), 0.5), [0, 1], cfg, steps=3)  # warm-up (imports)

    rows, n = [], args.seeds
    for fam, P in families(args.seeds).items():
        best = P.argmax(1, keepdim=True)  # (S, 1)
        batch, t_batch = timed(lambda P=P: grpo_bandit_batch(P, seeds, cfg), args.repeats)
        p_final = batch.probs.gather(1, best)[:, 0]
        hits = [first_hit(batch.history["p_best"][:, s]) for s in seeds]
        rows.append((fam, f"GRPO mu=1, {n} batched", p_final, hits, t_batch))
        if not args.skip_serial:
            serial, t_serial = timed(
                lambda P=P: [grpo_bandit(P[s], cfg, seed=s).probs for s in seeds], args.repeats
            )
            assert torch.allclose(torch.stack(serial), batch.probs, atol=1e-5)  # same runs
            rows.append((fam, f"GRPO mu=1, {n} serial", p_final, hits, t_serial))
        mu2, t_mu2 = timed(lambda P=P: grpo_bandit_batch(P, seeds, cfg, mu=2), args.repeats)
        rows.append((fam, f"GRPO mu=2, {n} batched", mu2.probs.gather(1, best)[:, 0],
                     [first_hit(mu2.history["p_best"][:, s]) for s in seeds], t_mu2))

        def rf(P=P):
            return [reinforce_bandit(P[s], cfg.group_size, cfg.steps, cfg.lr, seed=s)
                    for s in seeds]

        runs, t_rf = timed(rf, args.repeats)
        p_rf = torch.stack([r.probs for r in runs]).gather(1, best)[:, 0]
        hits_rf = [first_hit(torch.tensor(r.history["p_best"])) for r in runs]
        rows.append((fam, "REINFORCE + baseline", p_rf, hits_rf, t_rf))

    print(f"10-armed Bernoulli bandits, G = {cfg.group_size}, {cfg.steps} steps, "
          f"{n} seeds, median of {args.repeats} repeat(s), torch threads = 1\n")
    head = ("bandits", "method", "p_best>=0.9 at 300", "min p_best", "median step to 0.9",
            f"time {n} runs (s)")
    fmt = "| {:<19} | {:<22} | {:>18} | {:>10} | {:>18} | {:>16} |"
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in (19, 22, 18, 10, 18, 16))))
    for fam, method, p, hits, t in rows:
        ok = int((p >= 0.9).sum())
        print(fmt.format(fam, method, f"{ok}/{n} ({100 * ok / n:.0f}%)", f"{p.min():.3f}",
                         f"{statistics.median(hits):.0f}", f"{t:.2f}"))


if __name__ == "__main__":
    main()
