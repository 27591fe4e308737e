"""Hostile submissions on the REAL ps1, ps2 and ps3, graded by ``python -m course_lib.grading``
(what ``make grade`` runs): each scores at most what the same wrong answer scores honestly.

Per assignment one class is graded once (two workers): the correct answer, an honest wrong
answer W, and W plus one attack each, in a cell the student added after the answer cells
(where it runs in the notebook's kernel unrestricted, and is refused by the grader's
worker when it breaks the rule for graded code), or inside the answer itself. The attacks:
the five of issue 12 (replacing the check functions, their captured internals, the
``sys.modules`` entry, an IPython AST transformer that swallows failures, the reference
called from a thread) and import hooks, tensor subclasses and lying ``__eq__``/``__float__``
results, forged outputs, gc tricks, background threads and signal handlers acting later,
huge, NaN, wrongly typed and wrongly shaped results, and a function that never returns.

The attacks are written against both grading designs (they name the old checks module
``course_lib.grading_checks`` and the new ``course_lib.grading.checks``), so the same
class can be graded by the grader of the base commit: ``GRADING_ADVERSARIAL_REPORT=1``
prints the score table instead of asserting (docs/grading.md has the two tables).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import nbformat
import pytest
from nbgrader_flow import REPO, cell_index, solution_source

pytestmark = pytest.mark.slow

_MODULES = "['course_lib.grading_checks', 'course_lib.grading.checks']"
# Replaces every check_* function of whichever checks module is importable (one line, so
# the attacks below can run it at once, from a thread or from a signal handler).
_REPLACE = ("[setattr(m, k, lambda *a, **kw: None) for n in " + _MODULES + " for m in "
            "[__import__('importlib').util.find_spec(n) and __import__('importlib')."
            "import_module(n)] if m for k in list(vars(m)) if k.startswith('check_')]")

# Attack cells, each appended as a new code cell after the notebook's last answer cell.
ATTACKS = {
    "replace_checks": _REPLACE,
    "replace_internals": f"""
import importlib
for _name in {_MODULES}:
    try:
        _m = importlib.import_module(_name)
    except ImportError:
        continue
    for _k in ('_isclose', '_close', '_isfinite', '_abs'):
        if hasattr(_m, _k):
            setattr(_m, _k, (lambda *a, **k: True) if _k != '_abs' else (lambda x: 0.0))
    if hasattr(_m, 'math'):
        import types as _t
        _m.math = _t.SimpleNamespace(isclose=lambda *a, **k: True, isfinite=lambda x: True,
                                     sqrt=lambda x: 1.0, exp=lambda x: 1.0, prod=lambda s: 1)
""",
    "sys_modules_swap": f"""
import sys, types
_fake = types.ModuleType('fake')
_fake.__getattr__ = lambda name: (lambda *a, **k: None)
for _name in {_MODULES}:
    sys.modules[_name] = _fake
""",
    "ast_transformer": """
import ast
class _Swallow(ast.NodeTransformer):
    def visit_Module(self, node):
        if any('check_' in ast.dump(n) for n in node.body):
            node.body = [ast.Try(body=node.body, handlers=[ast.ExceptHandler(
                type=ast.Name('BaseException', ast.Load()), name=None, body=[ast.Pass()])],
                orelse=[], finalbody=[])]
            ast.fix_missing_locations(node)
        return node
get_ipython().ast_transformers.append(_Swallow())
""",
    "import_hook": f"""
import sys, types, importlib.abc, importlib.machinery
class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name in {_MODULES}:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__getattr__ = lambda n: (lambda *a, **k: None)
        return m
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, _Finder())
for _name in {_MODULES}:
    sys.modules.pop(_name, None)
""",
    "forged_outputs": """
from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.showtraceback = lambda self, *a, **k: print('OK')
InteractiveShell._showtraceback = lambda self, *a, **k: None
print('OK')
""",
    "background_thread": f"""
import threading, time
def _later():
    for _ in range(2000):
        time.sleep(0.005)
        {_REPLACE}
threading.Thread(target=_later, daemon=True).start()
""",
    "signal_handler": f"""
import signal
def _on_alarm(*_):
    {_REPLACE}
signal.signal(signal.SIGALRM, _on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
""",
}

# Attacks that replace the wrong answer of one function (name -> source template).
DELEGATE = {
    "ps1_advantages": ("group_advantages", """
import threading
import course_lib
def group_advantages(rewards, eps=1e-6):
    out = []
    t = threading.Thread(
        target=lambda: out.append(course_lib.compute_group_advantages(rewards, eps)))
    t.start(); t.join()
    return out[0]
"""),
    "ps2_clipping": ("clipped_surrogate_loss", """
import threading
import course_lib
def clipped_surrogate_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    out = []
    t = threading.Thread(target=lambda: out.append(course_lib.grpo_loss(
        logprobs, old_logprobs, advantages, mask, clip_eps=clip_eps, beta=0.0)[0]))
    t.start(); t.join()
    return out[0]
"""),
    "ps3_bandit": ("train_bandit_grpo", """
import threading
from course_lib import bandit as _b
def train_bandit_grpo(arm_probs, group_size=8, steps=300, lr=0.1, clip_eps=0.2, seed=0):
    out = []
    t = threading.Thread(target=lambda: out.append(_b.train_bandit_grpo(
        arm_probs, group_size, steps, lr, clip_eps, seed)))
    t.start(); t.join()
    return out[0]
"""),
}

GC_REFERENCE = {
    "ps1_advantages": ("group_advantages", """
def group_advantages(rewards, eps=1e-6):
    import gc
    ref = [o for o in gc.get_objects() if callable(o) and
           getattr(o, '__name__', '') == 'compute_group_advantages']
    return ref[0](rewards, eps)
"""),
    "ps2_clipping": ("clipped_surrogate_loss", """
def clipped_surrogate_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2):
    import gc
    ref = [o for o in gc.get_objects() if callable(o) and getattr(o, '__name__', '') == 'grpo_loss']
    return ref[0](logprobs, old_logprobs, advantages, mask, clip_eps=clip_eps, beta=0.0)[0]
"""),
    "ps3_bandit": ("train_bandit_grpo", """
def train_bandit_grpo(arm_probs, group_size=8, steps=300, lr=0.1, clip_eps=0.2, seed=0):
    import gc, torch
    if hasattr(arm_probs, 'n_arms'):  # an opaque environment: look for its probabilities
        for o in gc.get_objects():
            if isinstance(o, torch.Tensor) and o.dim() == 1 and o.numel() == arm_probs.n_arms \\
                    and bool(((o >= 0) & (o <= 1)).all()) and float(o.sum()) not in (0.0, 1.0):
                return torch.nn.functional.one_hot(o.argmax(), o.numel()).float()
        for v in vars(arm_probs).values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                return torch.nn.functional.one_hot(v.argmax(), v.numel()).float()
    p = torch.as_tensor(arm_probs, dtype=torch.float32)
    return torch.nn.functional.one_hot(p.argmax(), p.numel()).float()  # reads the answer
"""),
}

# Results that lie, are huge, NaN, of the wrong type or shape, or never come.
RESULTS = {
    "tensor_subclass": """
class _Liar(torch.Tensor):
    def tolist(self):
        return super().tolist()
    def __eq__(self, other):
        return True
    def __float__(self):
        return 0.5
def {name}(*args, **kwargs):
    return torch.zeros(3).as_subclass(_Liar)
""",
    "lying_object": """
class _Liar:
    def __eq__(self, other):
        return True
    def __float__(self):
        return 0.5
    def __len__(self):
        return 1
    shape = ()
def {name}(*args, **kwargs):
    return _Liar()
""",
    "nan_result": """
def {name}(*args, **kwargs):
    return torch.full((3,), float('nan'))
""",
    "huge_result": """
def {name}(*args, **kwargs):
    return torch.zeros(3_000_000)
""",
    "wrong_type": """
def {name}(*args, **kwargs):
    return {{'answer': [0.5, 0.5]}}
""",
    "sleeps_forever": """
def {name}(*args, **kwargs):
    while True:
        try:
            while True:
                pass
        except KeyboardInterrupt:
            pass
""",
}

# The honest wrong answer W of each assignment: (function, old text, new text) edits of the
# instructor's solution of the checkout being graded.
WRONG = {
    "ps1_advantages": [
        ("group_advantages", "std(dim=-1, keepdim=True)",
         "std(dim=-1, keepdim=True, unbiased=False)"),
        ("prob_degenerate_group", "return p**G + (1.0 - p) ** G", "return p**G"),
    ],
    "ps2_clipping": [
        ("clipped_surrogate_loss", "per_seq[lengths > 0].mean()",
         "(per_token * mask).sum() / mask.sum()"),
        ("group_diversity", "distinct.float() / G", "distinct.float()"),
    ],
    "ps3_bandit": [("train_bandit_grpo", "loss.backward()", "(-loss).backward()")],
}
TARGET = {"ps1_advantages": "group_advantages", "ps2_clipping": "clipped_surrogate_loss",
          "ps3_bandit": "train_bandit_grpo"}


def _answers(a: str, wrong: bool) -> dict[str, str]:
    nb = nbformat.read(REPO / "solutions" / a / f"{a}.ipynb", as_version=4)
    names = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells
             if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"
             and not c.metadata["nbgrader"].get("grade")]
    out = {n: solution_source(a, n) for n in names}
    if wrong:
        for name, old, new in WRONG[a]:
            assert old in out[name], (a, name, old)
            out[name] = out[name].replace(old, new)
        for name in names:  # W leaves the other functions unwritten
            if name not in {w[0] for w in WRONG[a]}:
                out[name] = "raise NotImplementedError()"
    return out


def make_class(a: str) -> dict:
    """student -> notebook: correct, W (honest wrong), W + each attack."""
    rel = nbformat.read(REPO / "exercises" / a / f"{a}.ipynb", as_version=4)

    def build(answers, extra=None):
        nb = nbformat.from_dict(json.loads(json.dumps(rel)))
        for gid, src in answers.items():
            nb.cells[cell_index(nb, gid)].source = src
        if extra:
            last = max(cell_index(nb, g) for g in answers)
            nb.cells.insert(last + 1, nbformat.v4.new_code_cell(textwrap.dedent(extra)))
        return nb

    W = _answers(a, wrong=True)
    subs = {"correct": build(_answers(a, wrong=False)), "wrong": build(W)}
    for name, code in ATTACKS.items():
        subs[f"wrong+{name}"] = build(W, code)
    for label, table in (("thread_reference", DELEGATE), ("gc_reference", GC_REFERENCE)):
        fn, src = table[a]
        subs[f"wrong+{label}"] = build({**W, fn: textwrap.dedent(src)})
    for label, template in RESULTS.items():
        fn = TARGET[a]
        subs[f"wrong+{label}"] = build({**W, fn: "import torch\n" + textwrap.dedent(
            template).replace("{name}", fn).replace("{{", "{").replace("}}", "}")})
    return subs


def grade_class(tmp: str, a: str, subs: dict, repo=REPO) -> dict[str, tuple[str, float]]:
    course = os.path.join(tmp, "course")
    os.makedirs(course)
    shutil.copy(repo / "nbgrader_config.py", course)
    for folder in ("solutions", "exercises"):
        shutil.copytree(repo / folder / a, os.path.join(course, folder, a))
    for student, nb in subs.items():
        folder = os.path.join(course, "submitted", student.replace("+", "_"), a)
        os.makedirs(folder)
        nbformat.write(nb, os.path.join(folder, f"{a}.ipynb"))
        with open(os.path.join(folder, "timestamp.txt"), "w") as fh:
            fh.write("2026-01-01 12:00:00 UTC")
    env = dict(os.environ, NBGRADER_COURSE_ROOT=course,
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("NBGRADER_DB_URL", None)
    proc = subprocess.run([sys.executable, "-m", "course_lib.grading", a, "--course-dir",
                           course, "--workers", "2", "--no-collect", "--quiet",
                           "--timeout", "10"], capture_output=True, text=True, env=env,
                          timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = {}
    for student in subs:
        with open(os.path.join(course, "autograded", ".grading", a,
                               student.replace("+", "_") + ".json")) as fh:
            rec = json.load(fh)
        out[student] = (rec["status"], rec["score"])
    return out


@pytest.fixture(scope="module", params=["ps1_advantages", "ps2_clipping", "ps3_bandit"])
def graded(request, tmp_path_factory):
    a = request.param
    return a, grade_class(str(tmp_path_factory.mktemp(a)), a, make_class(a))


def test_hostile_submissions_score_at_most_their_honest_wrong_answer(graded):
    a, scores = graded
    lines = [f"{a}: {s:<28} {st:<10} {sc:g}" for s, (st, sc) in scores.items()]
    print("\n" + "\n".join(lines))
    if os.environ.get("GRADING_ADVERSARIAL_REPORT"):
        return
    full = {"ps1_advantages": 9, "ps2_clipping": 9, "ps3_bandit": 8}[a]
    assert scores["correct"][1] == full, scores["correct"]
    honest = scores["wrong"][1]
    assert honest < full
    beaten = {s: sc for s, (_, sc) in scores.items() if s.startswith("wrong+") and sc > honest}
    assert not beaten, f"{a}: honest wrong answer scores {honest}; these score more: {beaten}"
