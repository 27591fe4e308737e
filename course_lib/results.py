"""Committed benchmark results: their provenance record, loading them, intervals over seeds.

Chapters: "GRPO vs PPO vs DPO, measured" and "Scaling up with TRL" render runs too long
for a 60-second notebook from JSON files under ``benchmarks/results/``. Such a file is
trusted only with its provenance, so every result a benchmark script commits carries a
``"provenance"`` record (:func:`collect_provenance`), the notebook prints it
(:func:`describe`), and ``tests/test_results_reproduce.py`` reruns the runs it names and
requires the same numbers. The record's keys (:data:`PROVENANCE_KEYS`):

=============  ================================================================================
key            value
=============  ================================================================================
command        the command line that wrote the file (``python benchmarks/...``)
git_revision   ``git rev-parse HEAD`` when the run started (the commit of the script)
git_dirty      True if tracked files differed from that commit (a committed result needs False)
created        UTC start time, ISO 8601
seeds          the seeds of the runs
versions       python, torch, numpy, course_lib (+ transformers, trl, ... when used)
machine        platform, processor, CPU model (``cpu``), CPU count, CPUs usable, torch
               threads, load average
reproduce      ``{"script": path, "function": name, "runs": [run ids]}``: how the test reruns
               (optionally ``"prefix_steps": n``: only the first n steps of each run, below)
=============  ================================================================================

The reproduce contract: the result has ``"runs"``, a list of dicts, each with an ``"id"``,
a ``"spec"`` (everything the run needs, written out in full: the config dataclass as
``asdict``, model and warm-start configs, seed, threads; never "the current defaults") and
``"exact"`` (per-step metrics and evaluations, which the same spec must reproduce exactly
on the same kind of machine; wall times and memory go elsewhere, e.g. ``"timing"``).
``function(spec)`` in ``script`` runs one spec in the current process and returns a dict
with the same ``"exact"``. The test reruns the ids listed in ``reproduce["runs"]``.

A run too long for the test's budget may be checked on a prefix: with
``reproduce["prefix_steps"] = n`` the test reruns the spec with ``config["steps"] = n`` and
compares the first n entries of every per-step list of ``"exact"``, the evaluations at steps
<= n (the lists whose key starts with ``eval_``, one entry per evaluation, ``eval_step``
among them) and every other value whole. This holds only if the first n steps do not
depend on the run's length, so the test refuses a prefix unless the spec has a constant
learning rate (``lr_schedule`` "constant", ``warmup_steps`` 0) and the full run evaluated
at step n (``eval_every`` > 0 divides n), as the rerun does at its last step.

This module imports only the standard library (no torch), so notebooks and benchmark
scripts can use it at no cost.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["PROVENANCE_KEYS", "results_dir", "load", "cpu_model", "collect_provenance",
           "write_result", "config_from_spec", "warm_start_from_spec", "torch_threads",
           "check_provenance", "describe", "t_quantile", "mean_interval", "welch_interval"]

PROVENANCE_KEYS = ("command", "git_revision", "git_dirty", "created", "seeds", "versions",
                   "machine", "reproduce")

_ROOT = Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    """``benchmarks/results`` of the repository this course_lib was installed from."""
    return _ROOT / "benchmarks" / "results"


def load(name: str) -> dict:
    """The committed result ``benchmarks/results/<name>`` as a dict."""
    path = results_dir() / name
    if not path.exists():
        raise ValueError(f"no committed result {name!r} in {results_dir()} (course_lib must be "
                         f"installed from a clone of the repository, `pip install -e .`)")
    return json.loads(path.read_text())


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``) and the vector instructions torch uses.

    Two machines of the same architecture can differ in the float kernels they run (MKL
    and ATen pick them by CPU), so a seeded run reproduces bit for bit only on the same
    kind of CPU; the provenance records it so a rerun on another CPU can say so.
    """
    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, torch {torch.backends.cpu.get_cpu_capability()}"


def collect_provenance(seeds: list[int], torch_threads: int, reproduce: dict,
                       packages: tuple[str, ...] = (), argv: list[str] | None = None) -> dict:
    """The provenance record of a benchmark started now (call it before the first run).

    Args:
        seeds: seeds of the runs the result will hold.
        torch_threads: intra-op threads every run uses (``torch.set_num_threads``).
        reproduce: ``{"script": "benchmarks/x.py", "function": "name", "runs": [ids]}``.
        packages: versions to record besides python, torch, numpy and course_lib
            (e.g. ``("transformers", "trl")``).
        argv: the command line (default ``sys.argv``).
    """
    missing = {"script", "function", "runs"} - set(reproduce)
    if missing:
        raise ValueError(f"reproduce needs the keys script, function, runs; missing {missing}")
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    if script.is_absolute() and script.is_relative_to(_ROOT):
        argv[0] = str(script.relative_to(_ROOT))
    dirty = _git("status", "--porcelain", "--untracked-files=no") != ""
    versions = {"python": platform.python_version(),
                "course_lib": _version("course_lib")}
    for pkg in ("torch", "numpy", *packages):
        versions[pkg] = _version(pkg)
    return {
        "command": " ".join(["python", *argv]),
        "git_revision": _git("rev-parse", "HEAD"),
        "git_dirty": dirty,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seeds": list(seeds),
        "versions": versions,
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpu": cpu_model(),
                    "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                    "torch_threads": torch_threads, "load_average_start": os.getloadavg()},
        "reproduce": dict(reproduce),
    }


def config_from_spec(config_cls, fields: dict):
    """``config_cls`` rebuilt field by field from a spec's ``asdict`` (JSON lists back to
    tuples), so only the spec decides what runs, not today's defaults."""
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def warm_start_from_spec(run_spec: dict):
    """``(task, policy)`` of a spec: the task (``"task"``, default addition, built with the
    keyword arguments ``"task_config"``, default seed 0) and the cached supervised warm start
    of ``model_config``, ``sft_config`` and ``warm_start_seed`` (default 0)."""
    from course_lib.model import ModelConfig
    from course_lib.sft import SFTConfig, warm_start
    from course_lib.tasks import TASKS

    task_config = {"seed": 0, **run_spec.get("task_config", {})}
    task = TASKS[run_spec.get("task", "addition")](**task_config)
    policy = warm_start(task, seed=run_spec.get("warm_start_seed", 0),
                        model_config=ModelConfig(**run_spec["model_config"]),
                        sft_config=SFTConfig(**run_spec["sft_config"]))
    return task, policy


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_result(path: str | Path, result: dict) -> None:
    """Write ``result`` (with its ``"provenance"``) as compact JSON; floats round-trip."""
    check_provenance(result)
    result["provenance"]["machine"]["load_average_end"] = os.getloadavg()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


def check_provenance(result: dict) -> None:
    """Raise ValueError if ``result`` lacks a complete provenance record or its run ids."""
    prov = result.get("provenance")
    if not isinstance(prov, dict):
        raise ValueError("the result has no 'provenance' record (use collect_provenance)")
    missing = [k for k in PROVENANCE_KEYS if k not in prov]
    if missing:
        raise ValueError(f"provenance lacks {missing}")
    rev = prov["git_revision"]
    if not (isinstance(rev, str) and len(rev) == 40 and all(c in "0123456789abcdef" for c in rev)):
        raise ValueError(f"git_revision must be a 40-digit hex commit, got {rev!r}")
    for pkg in ("python", "torch", "course_lib"):
        if not prov["versions"].get(pkg):
            raise ValueError(f"provenance versions lack {pkg}")
    for key in ("platform", "cpu_count", "torch_threads"):
        if key not in prov["machine"]:
            raise ValueError(f"provenance machine lacks {key}")
    prefix = prov["reproduce"].get("prefix_steps")
    if prefix is not None and not (isinstance(prefix, int) and prefix > 0):
        raise ValueError(f"reproduce prefix_steps must be a positive int, got {prefix!r}")
    ids = {r.get("id") for r in result.get("runs", [])}
    unknown = [i for i in prov["reproduce"]["runs"] if i not in ids]
    if unknown or not prov["reproduce"]["runs"]:
        raise ValueError(f"reproduce names runs that are not in result['runs']: {unknown}"
                         if unknown else "reproduce names no run")


def describe(result: dict) -> str:
    """The provenance as the lines a notebook prints under a rendered result."""
    p = result["provenance"]
    m = p["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v)
    load_avg = m.get("load_average_start")
    prefix = p["reproduce"].get("prefix_steps")
    lines = [
        f"command:  {p['command']}",
        f"revision: {p['git_revision']}{' (with uncommitted changes)' if p['git_dirty'] else ''}"
        f", started {p['created']}",
        f"seeds:    {p['seeds']}",
        f"versions: {versions}",
        f"machine:  {m['platform']}, {m['cpu_count']} cores ({m.get('cpus_usable')} usable), "
        f"{m['torch_threads']} torch thread(s) per run"
        + (f", load average {load_avg[0]:.1f} at the start" if load_avg else ""),
        f"cpu:      {m.get('cpu', 'not recorded')}",
        f"reproduced by tests/test_results_reproduce.py: {p['reproduce']['function']}() of "
        f"{p['reproduce']['script']} reruns {', '.join(p['reproduce']['runs'])}"
        + (f" (the first {prefix} steps)" if prefix else ""),
    ]
    return "\n".join(lines)


# ------------------------------------------------------------ intervals over seeds ----
def _t_pdf(x: float, df: float) -> float:
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    return c * (1 + x * x / df) ** (-(df + 1) / 2)


def _t_cdf(x: float, df: float, n: int = 2000) -> float:
    """P(T <= x) for x >= 0: 1/2 + the density integrated over [0, x] (Simpson's rule)."""
    h = x / n
    s = _t_pdf(0.0, df) + _t_pdf(x, df)
    s += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, n))
    return 0.5 + s * h / 3


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom (p > 0.5).

    Bisection on the CDF; accurate to about 1e-9 (``t_quantile(0.975, 4)`` = 2.776445).
    """
    if not 0.5 < p < 1 or not df > 0:
        raise ValueError(f"need 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean over seeds and its two-sided t-interval: mean -/+ t_{(1+level)/2, n-1} s / sqrt(n).

    ``s`` is the sample standard deviation (n - 1). The interval covers the mean over
    seeds of *this* setting; it says nothing about other tasks or settings.
    """
    n = len(values)
    if n < 2:
        raise ValueError(f"an interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile((1 + level) / 2, n - 1) * s / math.sqrt(n)
    return mean, mean - half, mean + half


def welch_interval(a: list[float], b: list[float], level: float = 0.95
                   ) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its Welch t-interval (unequal variances,
    Welch-Satterthwaite degrees of freedom). The interval excludes 0 iff Welch's two-sided
    t-test rejects equal means at 1 - level."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each sample needs at least 2 values")
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)  # squared standard error
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return ma - mb, ma - mb, ma - mb
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile((1 + level) / 2, df) * se
    return ma - mb, ma - mb - half, ma - mb + half
