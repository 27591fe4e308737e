"""GRPO without a language model: a K-armed Bernoulli bandit and a softmax policy.

Chapter: the GRPO chapter (``book/05_grpo.ipynb``), section "GRPO without an LLM", and
assignments ``ps2_clipping`` / ``ps3_bandit``. This is the draft notebook's exercise 5 made
real: the bandit is the smallest problem on which every piece of GRPO can be watched.

The mapping to language models: the "prompt" is the single state of the bandit, a
"response" is one arm (a one-token sequence), the verifier is a Bernoulli draw with the
arm's success probability (binary reward, as DeepSeek-R1's rule-based accuracy reward).
Each step samples a group of G pulls from pi_old, scores them, computes group-relative
advantages (:func:`course_lib.compute_group_advantages`) and takes ``mu`` clipped updates
with :func:`course_lib.grpo_loss` (DeepSeekMath, Shao et al. 2024, Eq. 3), optionally with
beta * k3 towards the initial policy (Eq. 4). Nothing is re-derived here: the losses and
advantages are course_lib's pure functions; this module only samples and optimises.

For contrast, :func:`reinforce_bandit` is plain REINFORCE with a moving-average baseline
(Williams 1992): advantage ``r - b`` with no std normalisation, no clipping, one update per
batch.

Conventions:

* The policy is ``softmax(logits)`` over K arms, logits initialised to 0 (uniform policy;
  the same policy is the KL reference ``pi_ref``).
* Optimiser: Adam on the logits. Adam's per-parameter normalisation makes ``lr`` roughly
  the largest change of a logit per update, independent of the advantage scale.
* Seeds: one ``torch.Generator`` seeded with ``seed`` draws every arm and every reward, so
  the same arguments give identical histories.
* ``history`` is a dict of equal-length lists, one entry per step, ready to plot:
  ``mean_reward`` (mean sampled reward of the step), ``expected_reward`` (sum_k pi_k p_k of
  the policy after the step), ``p_best`` (probability of the best arm after the step),
  ``adv_var`` (variance of the advantages used), ``degenerate_frac`` (share of the step's
  groups whose rewards are all equal: no signal), ``clip_frac`` (share of pulls whose
  clipped term was active, averaged over the ``mu`` updates), ``kl`` (exact
  KL(pi_theta || pi_ref) after the step, computed from the K probabilities, not estimated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from course_lib._checks import check_choice, check_clip_eps, check_nonnegative
from course_lib.grpo import GRPO_LOSS_TYPES, SCALES, compute_group_advantages, grpo_loss
from course_lib.surrogate import clipped_surrogate

__all__ = [
    "BernoulliBandit",
    "make_bandit",
    "BanditGRPOConfig",
    "BanditRun",
    "grpo_bandit",
    "grpo_bandit_batch",
    "reinforce_bandit",
    "train_bandit_grpo",
    "BanditEnv",
    "BernoulliRewards",
    "HISTORY_KEYS",
]

#: Keys of the per-step history returned by :func:`grpo_bandit` and :func:`reinforce_bandit`.
HISTORY_KEYS = (
    "mean_reward",
    "expected_reward",
    "p_best",
    "adv_var",
    "degenerate_frac",
    "clip_frac",
    "kl",
)


def _as_probs(arm_probs: object) -> Tensor:
    """Validate arm success probabilities and return them as a float32 tensor (K,)."""
    if isinstance(arm_probs, BernoulliBandit):
        return arm_probs.arm_probs
    p = torch.as_tensor(arm_probs, dtype=torch.float32)
    if p.dim() != 1 or p.shape[0] < 2:
        raise ValueError(
            f"arm_probs must be a 1-D sequence of at least 2 arms, got shape {tuple(p.shape)}"
        )
    if not torch.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"arm_probs must be probabilities in [0, 1], got {p.tolist()}")
    return p


@dataclass(frozen=True)
class BernoulliBandit:
    """K arms; pulling arm k pays 1 with probability ``arm_probs[k]`` and 0 otherwise.

    Args:
        arm_probs: (K,) success probabilities in [0, 1], K >= 2 (list or tensor).
    """

    arm_probs: Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "arm_probs", _as_probs(self.arm_probs))

    @property
    def n_arms(self) -> int:
        return int(self.arm_probs.shape[0])

    @property
    def best_arm(self) -> int:
        """Index of the arm with the highest success probability (first one on ties)."""
        return int(self.arm_probs.argmax())

    @property
    def gap(self) -> float:
        """Lead of the best arm over the second best: what makes a bandit hard."""
        top2 = self.arm_probs.topk(2).values
        return float(top2[0] - top2[1])

    def pull(self, arms: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Binary rewards (float 0/1, same shape as ``arms``) for a tensor of arm indices."""
        u = torch.rand(arms.shape, generator=generator)  # same shape as arms
        return (u < self.arm_probs[arms]).float()


def make_bandit(n_arms: int = 10, min_gap: float = 0.1, seed: int = 0) -> BernoulliBandit:
    """A random bandit: success probabilities uniform on [0, 1], redrawn until the best arm
    leads the second by at least ``min_gap`` (the benchmark's family of bandits)."""
    if not isinstance(n_arms, int) or n_arms < 2:
        raise ValueError(f"n_arms must be an int >= 2, got {n_arms!r}")
    if not 0.0 <= min_gap < 1.0:
        raise ValueError(f"min_gap must be in [0, 1), got {min_gap!r}")
    g = torch.Generator().manual_seed(seed)
    for _ in range(100_000):
        p = torch.rand(n_arms, generator=g)  # (K,)
        top2 = p.topk(2).values
        if top2[0] - top2[1] >= min_gap:
            return BernoulliBandit(p)
    raise ValueError(f"could not draw {n_arms} arms with a gap >= {min_gap}; lower min_gap")


@dataclass
class BanditGRPOConfig:
    """Settings of GRPO on the bandit (defaults: the ones the benchmark measures)."""

    group_size: int = 8
    """G, pulls per group (DeepSeek-R1 used 16 responses per question)."""
    groups_per_step: int = 1
    """Independent groups per step (like several prompts per batch); all share one update."""
    steps: int = 300
    """Sampling stages (each followed by ``mu`` updates)."""
    lr: float = 0.1
    """Adam learning rate on the logits."""
    mu: int = 1
    """Updates per sampled batch (DeepSeekMath: 1). With mu = 1 the ratio is 1 at the update
    and the clip never acts; the clipping experiments use mu = 2..4."""
    clip_eps: float = 0.2
    """Clip range of the ratio: [1 - clip_eps, 1 + clip_eps_high]."""
    clip_eps_high: float | None = None
    """Upper clip (DAPO's clip-higher uses 0.28); None = clip_eps."""
    beta: float = 0.0
    """Coefficient of the k3 KL term towards the initial (uniform) policy; 0 = no KL."""
    scale: str = "group"
    """Advantage normalisation of compute_group_advantages: group, none (Dr. GRPO), batch."""
    loss_type: str = "grpo"
    """Aggregation of grpo_loss (identical here: every sequence has one token)."""
    seed: int = 0
    """Seeds the generator that draws every arm and every reward."""

    def __post_init__(self) -> None:
        for name in ("group_size", "groups_per_step", "steps", "mu"):
            v = getattr(self, name)
            low = 2 if name == "group_size" else 1
            if not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        check_clip_eps("clip_eps", self.clip_eps)
        if self.clip_eps_high is not None:
            check_clip_eps("clip_eps_high", self.clip_eps_high)
        check_nonnegative("beta", self.beta)
        check_choice("scale", self.scale, SCALES)
        check_choice("loss_type", self.loss_type, tuple(GRPO_LOSS_TYPES))


@dataclass
class BanditRun:
    """Result of a bandit training run."""

    probs: Tensor
    """(K,) final policy's arm probabilities."""
    history: dict[str, list[float]] = field(default_factory=dict)
    """One list per key of HISTORY_KEYS, one entry per step."""


def _exact_kl(logp: Tensor, ref_logp: Tensor) -> float:
    """KL(pi || pi_ref) = sum_k pi_k (log pi_k - log pi_ref_k), exact for K arms."""
    return float((logp.exp() * (logp - ref_logp)).sum())


def _new_history() -> dict[str, list[float]]:
    return {k: [] for k in HISTORY_KEYS}


def grpo_bandit(
    arm_probs: Tensor | BernoulliBandit | list[float],
    config: BanditGRPOConfig | None = None,
    **overrides: object,
) -> BanditRun:
    """Train a softmax policy on a Bernoulli bandit with GRPO; return probs and history.

    Per step (DeepSeekMath Algorithm 1 with one prompt, outcome supervision):

    1. ``pi_old <- pi_theta``; sample ``groups_per_step`` groups of G arms from pi_old.
    2. Rewards r (groups, G) from the bandit; ``A = compute_group_advantages(r)``.
    3. ``mu`` times: ``loss = grpo_loss(log pi_theta(a), log pi_old(a), A, ref_logprobs=
       log pi_ref(a) if beta > 0)`` on the pulls as (groups*G, 1) one-token sequences,
       then one Adam step on the logits.

    Args:
        arm_probs: (K,) success probabilities, or a :class:`BernoulliBandit`.
        config: settings; keyword ``overrides`` replace single fields
            (``grpo_bandit(p, mu=4, clip_eps=0.1)``).

    Returns:
        :class:`BanditRun` with ``probs`` (K,) and ``history`` (lists of floats, see the
        module docstring).
    """
    cfg = _config(config, overrides)
    p = _as_probs(arm_probs)  # (K,)
    probs, hist = _grpo_runs(p[None], [cfg.seed], cfg)
    return BanditRun(probs[0], {k: v[:, 0].tolist() for k, v in hist.items()})


def grpo_bandit_batch(
    arm_probs: Tensor,
    seeds: list[int],
    config: BanditGRPOConfig | None = None,
    **overrides: object,
) -> BanditRun:
    """S independent GRPO runs computed side by side (a benchmark over seeds in one go).

    Run s uses bandit ``arm_probs[s]`` and its own generator seeded ``seeds[s]`` (the
    ``config.seed`` field is ignored), so it draws exactly the pulls and rewards that
    ``grpo_bandit(arm_probs[s], config, seed=seeds[s])`` draws. The runs share no
    information: the loss is the SUM of the S runs' GRPO losses, so row s of the logits
    gets exactly run s's gradient, and Adam updates each logit on its own.

    Args:
        arm_probs: (S, K) success probabilities, one bandit per run.
        seeds: S seeds.

    Returns:
        :class:`BanditRun` with ``probs`` (S, K) and ``history`` of (steps, S) tensors.
    """
    cfg = _config(config, overrides)
    P = torch.as_tensor(arm_probs, dtype=torch.float32)
    if P.dim() != 2:
        raise ValueError(f"arm_probs must have shape (S, K), got {tuple(P.shape)}")
    for row in P:
        _as_probs(row)
    if len(seeds) != P.shape[0]:
        raise ValueError(f"need one seed per bandit: {P.shape[0]} bandits, {len(seeds)} seeds")
    probs, hist = _grpo_runs(P, list(seeds), cfg)
    return BanditRun(probs, hist)


def _config(config: BanditGRPOConfig | None, overrides: dict) -> BanditGRPOConfig:
    cfg = config if config is not None else BanditGRPOConfig()
    if overrides:
        cfg = BanditGRPOConfig(**{**cfg.__dict__, **overrides})
    return cfg


def _grpo_runs(
    P: Tensor, seeds: list[int], cfg: BanditGRPOConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRPO loop for S bandits P (S, K) at once; history values are (steps, S)."""
    S, K = P.shape
    G, N = cfg.group_size, cfg.groups_per_step
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    logits = torch.zeros(S, K, requires_grad=True)  # (S, K) uniform initial policies
    ref_logp = torch.log_softmax(logits.detach(), -1)  # (S, K) pi_ref = initial policy
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    best = P.argmax(dim=1, keepdim=True)  # (S, 1)
    hist = {k: torch.zeros(cfg.steps, S) for k in HISTORY_KEYS}
    for step in range(cfg.steps):
        with torch.no_grad():
            old_logp = torch.log_softmax(logits, -1)  # (S, K) pi_old
            old_p = old_logp.exp()
            arms, u = [], []
            for s in range(S):  # each run draws from its own generator, as a single run would
                arms.append(torch.multinomial(old_p[s], N * G, replacement=True,
                                              generator=gens[s]))  # (N*G,)
                u.append(torch.rand(N * G, generator=gens[s]))  # (N*G,)
            arms = torch.stack(arms)  # (S, N*G)
            rewards = (torch.stack(u) < P.gather(1, arms)).float().view(S, N, G)  # (S, N, G)
            if cfg.scale == "batch":  # the batch std is per run, not across runs
                adv = torch.stack([compute_group_advantages(r, scale="batch") for r in rewards])
            else:
                adv = compute_group_advantages(rewards, scale=cfg.scale)  # (S, N, G)
        adv_flat = adv.reshape(-1)  # (S*N*G,)
        old = old_logp.gather(1, arms).reshape(-1, 1)  # (S*N*G, 1) one-token sequences
        ref = ref_logp.gather(1, arms).reshape(-1, 1) if cfg.beta > 0 else None
        clip_frac = torch.zeros(S)
        for _ in range(cfg.mu):
            logp = torch.log_softmax(logits, -1).gather(1, arms).reshape(-1, 1)  # (S*N*G, 1)
            loss, stats = grpo_loss(
                logp, old, adv_flat, ref_logprobs=ref, clip_eps=cfg.clip_eps,
                clip_eps_high=cfg.clip_eps_high, beta=cfg.beta, loss_type=cfg.loss_type,
            )  # loss = mean over the S runs of each run's GRPO loss
            opt.zero_grad()
            (loss * S).backward()  # sum over runs: row s gets exactly run s's gradient
            opt.step()
            if S == 1:
                clip_frac += stats["clip_frac"]
            else:  # per-run share of clipped pulls, from the same surrogate grpo_loss uses
                with torch.no_grad():
                    _, _, is_clipped = clipped_surrogate(
                        logp, old, adv_flat[:, None], cfg.clip_eps, cfg.clip_eps_high
                    )  # (S*N*G, 1)
                clip_frac += is_clipped.view(S, N * G).float().mean(1)
        with torch.no_grad():
            logp_all = torch.log_softmax(logits, -1)  # (S, K)
            probs = logp_all.exp()
            hist["mean_reward"][step] = rewards.mean(dim=(1, 2))
            hist["expected_reward"][step] = (probs * P).sum(1)
            hist["p_best"][step] = probs.gather(1, best)[:, 0]
            hist["adv_var"][step] = adv.reshape(S, -1).var(dim=1, unbiased=False)
            hist["degenerate_frac"][step] = (rewards == rewards[..., :1]).all(-1).float().mean(1)
            hist["clip_frac"][step] = clip_frac / cfg.mu
            hist["kl"][step] = (probs * (logp_all - ref_logp)).sum(1)  # exact KL, (S,)
    return torch.softmax(logits.detach(), -1), hist


def reinforce_bandit(
    arm_probs: Tensor | BernoulliBandit | list[float],
    group_size: int = 8,
    steps: int = 300,
    lr: float = 0.1,
    baseline_decay: float = 0.9,
    seed: int = 0,
) -> BanditRun:
    """REINFORCE with a moving-average baseline on the bandit, for contrast with GRPO.

    Per step: sample G arms from pi_theta, rewards r, advantage ``A_i = r_i - b`` (no std
    division, no clipping), loss ``-mean_i A_i log pi_theta(a_i)`` (Williams 1992), one Adam
    step; then ``b <- decay * b + (1 - decay) * mean(r)`` (b starts at the first batch's
    mean). Unlike GRPO, a group whose rewards are all equal still moves the policy when
    ``b`` differs from that reward. ``clip_frac`` is always 0; ``kl`` is to the initial
    policy, as in :func:`grpo_bandit`.

    Returns:
        :class:`BanditRun` with ``probs`` (K,) and the same history keys as GRPO.
    """
    bandit = arm_probs if isinstance(arm_probs, BernoulliBandit) else BernoulliBandit(arm_probs)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not 0.0 <= baseline_decay < 1.0:
        raise ValueError(f"baseline_decay must be in [0, 1), got {baseline_decay!r}")
    g = torch.Generator().manual_seed(seed)
    logits = torch.zeros(bandit.n_arms, requires_grad=True)  # (K,)
    ref_logp = torch.log_softmax(logits.detach(), -1)  # (K,)
    opt = torch.optim.Adam([logits], lr=lr)
    hist = _new_history()
    best = bandit.best_arm
    baseline: float | None = None
    for _ in range(steps):
        with torch.no_grad():
            probs = torch.softmax(logits, -1)  # (K,)
            arms = torch.multinomial(probs, group_size, replacement=True, generator=g)  # (G,)
            rewards = bandit.pull(arms, g)  # (G,)
        mean_r = float(rewards.mean())
        b = mean_r if baseline is None else baseline
        adv = rewards - b  # (G,)
        logp = torch.log_softmax(logits, -1)[arms]  # (G,)
        loss = -(adv * logp).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        baseline = baseline_decay * b + (1 - baseline_decay) * mean_r
        with torch.no_grad():
            logp_all = torch.log_softmax(logits, -1)
            probs = logp_all.exp()
            hist["mean_reward"].append(mean_r)
            hist["expected_reward"].append(float((probs * bandit.arm_probs).sum()))
            hist["p_best"].append(float(probs[best]))
            hist["adv_var"].append(float(adv.var(unbiased=False)))
            hist["degenerate_frac"].append(float((rewards == rewards[0]).all()))
            hist["clip_frac"].append(0.0)
            hist["kl"].append(_exact_kl(logp_all, ref_logp))
    return BanditRun(torch.softmax(logits.detach(), -1), hist)


def train_bandit_grpo(
    arm_probs: Tensor | list[float],
    group_size: int = 8,
    steps: int = 300,
    lr: float = 0.1,
    clip_eps: float = 0.2,
    seed: int = 0,
) -> Tensor:
    """GRPO on a Bernoulli bandit; returns the final policy's arm probabilities (K,).

    The reference solution of assignment ``ps3_bandit``: :func:`grpo_bandit` with one
    group per step, ``mu = 2`` clipped updates per group (so that ``clip_eps`` acts), no KL
    term, Adam on the logits.
    """
    cfg = BanditGRPOConfig(group_size=group_size, steps=steps, lr=lr, clip_eps=clip_eps,
                           seed=seed, mu=2)
    return grpo_bandit(arm_probs, cfg).probs


# ----------------------------------------------------------------------------------------
# Opaque environments for the assignments (ps1_advantages, ps3_bandit). A learner sees only
# what it draws; the success probabilities stay with whoever built the environment. When
# an assignment is graded, the grader keeps the environment in its own (trusted) process
# and answers each draw over the channel to the student's sandboxed worker
# (course_lib/grading, docs/grading.md), so the probabilities never exist where the
# student's code runs.
class BanditEnv:
    """A K-armed Bernoulli bandit that only answers pulls, with a budget of pulls.

    ``pull(arms)`` returns one binary reward per arm index, drawn with the environment's own
    generator (seeded with ``seed``): the same seed and the same pulls give the same
    rewards, whoever pulls. Every pull is recorded (``history``: a list of ``(arms,
    rewards)`` pairs, the grader's record of what the learner saw) and counted against
    ``budget`` (None: unlimited); a pull past the budget raises ValueError.

    Args:
        arm_probs: (K,) success probabilities in [0, 1], K >= 2.
        seed: seeds the reward generator.
        budget: most pulls allowed in total (for GRPO: group_size * steps).

    Attributes:
        n_arms: K, the only thing a learner knows before pulling.
    """

    def __init__(self, arm_probs: Tensor | list[float], seed: int = 0,
                 budget: int | None = None):
        self._probs = _as_probs(arm_probs)  # (K,)
        if budget is not None and (not isinstance(budget, int) or budget < 0):
            raise ValueError(f"budget must be a non-negative int or None, got {budget!r}")
        self._gen = torch.Generator().manual_seed(int(seed))
        self.n_arms = int(self._probs.shape[0])
        self.budget = budget
        self.pulls = 0
        self.history: list[tuple[Tensor, Tensor]] = []

    def pull(self, arms: Tensor | list[int]) -> Tensor:
        """Rewards (n,) float 0/1 for the arm indices ``arms`` (n,), in order."""
        a = torch.as_tensor(arms)
        if a.dim() != 1 or a.dtype.is_floating_point or a.dtype == torch.bool:
            raise ValueError(f"arms must be a 1-D tensor of arm indices (integers), got "
                             f"shape {tuple(a.shape)} and dtype {a.dtype}")
        a = a.long()
        if a.numel() and (int(a.min()) < 0 or int(a.max()) >= self.n_arms):
            raise ValueError(f"arm indices must be in 0..{self.n_arms - 1}, got "
                             f"{a.tolist()[:8]}")
        if self.budget is not None and self.pulls + a.numel() > self.budget:
            raise ValueError(f"pull budget exhausted: {self.pulls} pulls made, {a.numel()} "
                             f"more asked, budget {self.budget} (group_size * steps)")
        u = torch.rand(a.shape, generator=self._gen)  # (n,)
        rewards = (u < self._probs[a]).float()  # (n,)
        self.pulls += int(a.numel())
        self.history.append((a.clone(), rewards.clone()))
        return rewards


class BernoulliRewards:
    """Binary rewards with a hidden success rate ``p``: ``draw(n)`` returns n of them.

    The source of ps1's simulation: a learner can count what it draws but cannot read
    ``p``. Draws come from the source's own generator (seeded with ``seed``) and are
    recorded in ``history`` (a list of (n,) tensors) and counted in ``drawn``.
    """

    def __init__(self, p: float, seed: int = 0, budget: int | None = None):
        if not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self._p = float(p)
        self._gen = torch.Generator().manual_seed(int(seed))
        self.budget = budget
        self.drawn = 0
        self.history: list[Tensor] = []

    def draw(self, n: int) -> Tensor:
        """n binary rewards (float 0/1), each 1 with probability p."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if self.budget is not None and self.drawn + n > self.budget:
            raise ValueError(f"draw budget exhausted: {self.drawn} drawn, {n} more asked, "
                             f"budget {self.budget}")
        r = (torch.rand(n, generator=self._gen) < self._p).float()  # (n,)
        self.drawn += n
        self.history.append(r.clone())
        return r
