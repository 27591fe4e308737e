"""The function worker itself, without the rule for graded code in front of it: course_lib
is not in its memory nor readable from disk, the grader's environments leave no
probabilities in it, forged or oversized answers are refused, and a call that hangs is
stopped (the architecture holds even for code the rule would have let through)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap

import pytest
from test_grading_adversarial import RESULTS

import course_lib
from course_lib.bandit import BanditEnv
from course_lib.grading.checks import CheckFailed, Result
from course_lib.grading.core import _kernel_env
from course_lib.grading.executor import Zygote
from course_lib.grading.harness import (
    CallTimeout,
    Declarations,
    FunctionWorker,
    Harness,
    RemoteCaller,
    WorkerLost,
)

pytestmark = pytest.mark.slow

PROBE = textwrap.dedent(f"""
    import gc, sys
    def probe(env):
        found = []
        try:
            import course_lib
            found.append('imported course_lib from ' + str(course_lib.__file__))
        except Exception as exc:
            found.append('no import: ' + type(exc).__name__)
        found += ['module ' + m for m in sys.modules if m.startswith('course_lib')]
        names = ('compute_group_advantages', 'grpo_loss', 'train_bandit_grpo', '_grpo_runs')
        found += ['object ' + o.__name__ for o in gc.get_objects()
                  if callable(o) and getattr(o, '__name__', '') in names]
        try:
            open({os.path.join(os.path.dirname(course_lib.__file__), "grpo.py")!r}).read()
            found.append('read grpo.py')
        except OSError as exc:
            found.append('no read: ' + type(exc).__name__)
        import torch
        seen = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)
                and o.numel() == 3 and 0.77 in [round(float(x), 2) for x in o.reshape(-1)]]
        found.append('probabilities seen: ' + str(len(seen)))
        found.append('env attributes: ' + ','.join(sorted(vars(env))))
        r = env.pull(torch.tensor([0, 1, 2]))
        found.append('pulled ' + str(r.tolist()))
        return '|'.join(found)
    def huge(*args):
        return torch.zeros(5_000_000)
""") + textwrap.dedent(RESULTS["sleeps_forever"]).replace("{name}", "forever")


@pytest.fixture(scope="module")
def harness():
    base = tempfile.mkdtemp(prefix="fw-test-")
    os.chmod(base, 0o711)
    zygote = Zygote(["torch"], _kernel_env(base, 1), base, worker=True)
    assert zygote.info.get("course_lib_loaded") is False

    def spawn():
        scratch = tempfile.mkdtemp(dir=base)
        policy = {"scratch": scratch, "read_only": [], "memory_mb": 2048, "user": None,
                  "landlock": True, "namespaces": True}
        return FunctionWorker(zygote, scratch, policy, _kernel_env(scratch, 1), 1)

    h = Harness(Declarations([], "import torch", 5.0), [], spawn, 10.0)
    h.ensure_worker().request({"op": "exec", "code": PROBE, "name": "probe"}, 30)
    yield h
    h.close()
    zygote.close()
    shutil.rmtree(base, ignore_errors=True)


def test_no_reference_in_the_worker_and_no_probabilities(harness):
    import time

    env = BanditEnv([0.11, 0.77, 0.42], seed=0, budget=10)
    res = RemoteCaller(harness, time.monotonic() + 30).call("probe", env)
    report = res.value["v"].split("|")
    print(report)
    assert report[0].startswith("no import"), report
    assert not [r for r in report if r.startswith(("module ", "object "))], report
    if harness.layers.get("landlock_abi"):
        assert "no read: PermissionError" in report, report
    assert "probabilities seen: 0" in report, report
    assert "env attributes: _channel,_index,budget,n_arms" in report, report
    assert env.pulls == 3 and any(r.startswith("pulled ") for r in report)
    assert sys.modules.get("course_lib") is course_lib  # the grader's side has it, of course


def test_a_call_that_ignores_interrupts_is_stopped(harness):
    import time

    start = time.monotonic()
    with pytest.raises((CallTimeout, WorkerLost)):
        RemoteCaller(harness, time.monotonic() + 1.0).call("forever")
    assert time.monotonic() - start < 1.0 + 2.0 + 5.0
    harness.worker = None  # it was killed: the next call gets a fresh worker
    harness.stopped.clear()
    harness.ensure_worker().request({"op": "exec", "code": PROBE, "name": "probe"}, 30)


def test_oversized_and_forged_answers_are_refused(harness):
    import time

    with pytest.raises(CheckFailed, match="tensor of 5000000"):
        RemoteCaller(harness, time.monotonic() + 30).call("huge").tensor("huge")
    forged = {"t": "tensor", "dtype": "float32", "shape": [2], "v": [1.0, "x"]}
    with pytest.raises(CheckFailed, match="well-formed"):
        Result("f", forged).tensor("f")
    with pytest.raises(CheckFailed, match="well-formed"):
        Result("f", {**forged, "shape": [3], "v": [1.0, 2.0]}).tensor("f")
    with pytest.raises(CheckFailed, match="number"):
        Result("f", {"t": "object", "type": "Liar"}).number("f")
