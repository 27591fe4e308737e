"""The package's layers: what each import loads, and the optional dependency groups.

Each check runs in a fresh interpreter and reads ``sys.modules`` after one import: the
core (algorithms, tasks, model, warm start, trainers, command line) must not load
Hugging Face's libraries or nbgrader, and a trainer module must not load the other
trainers. Only ``course_lib.trl_bridge`` needs the ``trl`` extra, and says so without it.
"""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters: about 15 s of CPU in all

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "trl", "datasets", "accelerate", "nbgrader")
TRAINER_MODULES = {f"course_lib.trainers.{n}" for n in ("grpo", "ppo", "reinforce", "dpo")}


# One fresh interpreter imports torch (every layer needs it), then forks a child per
# statement, which runs it and reports its module names: fresh for each, torch loaded once.
_FORK_EACH = """
import json, os, sys
import torch
for statement in json.loads(sys.argv[1]):
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        try:
            exec(statement)
            out = sorted(m for m in sys.modules if "." not in m or m.startswith("course_lib"))
        except BaseException as e:
            out = {"error": repr(e)}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        print(f.read())
    os.wait()
"""


def loaded_after(*statements: str) -> list[set[str]]:
    """Top-level and course_lib module names in sys.modules after each statement, each run
    in a fresh process (with only torch imported before it)."""
    out = subprocess.run([sys.executable, "-c", _FORK_EACH, json.dumps(statements)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    for statement, r in zip(statements, results, strict=True):
        assert not isinstance(r, dict), (statement, r)
    return [set(r) for r in results]


MODULES = {  # module -> the trainer modules it may load
    "course_lib": set(),
    "course_lib.sft": set(),
    "course_lib.evaluate": set(),
    "course_lib.train": TRAINER_MODULES,  # one subcommand per trainer
    **{m: {m} for m in sorted(TRAINER_MODULES)},
}


@pytest.fixture(scope="module")
def loaded():
    return dict(zip(MODULES, loaded_after(*(f"import {m}" for m in MODULES)), strict=True))


@pytest.mark.parametrize("module", MODULES)
def test_import_loads_no_heavy_library_and_no_unused_trainer(loaded, module):
    mods = loaded[module]
    assert not mods & set(HEAVY), (module, sorted(mods & set(HEAVY)))
    trainers = mods & TRAINER_MODULES
    assert trainers <= MODULES[module], (module, sorted(trainers - MODULES[module]))
    if module != "course_lib.train":
        assert "tyro" not in mods  # only the command line needs it


def test_the_check_can_fail(loaded):
    """The bridge does load transformers, train every trainer, and the trainers package
    one trainer on first use."""
    bridge, lazy = loaded_after("import course_lib.trl_bridge",
                                "from course_lib.trainers import GRPOTrainer, evaluate")
    assert "transformers" in bridge
    assert TRAINER_MODULES <= loaded["course_lib.train"]
    assert lazy & TRAINER_MODULES == {"course_lib.trainers.grpo"}


def test_trl_bridge_without_transformers_says_what_to_install():
    code = ("import sys\nsys.modules['transformers'] = None  # as if not installed\n"
            "import course_lib.trl_bridge")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode != 0
    assert "pip install 'course_lib[trl]'" in out.stderr


def test_pyproject_declares_the_extras_and_no_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(h in core for h in HEAVY)
    extras = project["optional-dependencies"]
    assert {"trl", "grading", "book", "dev"} <= set(extras)
    assert {"transformers", "trl"} <= set(extras["trl"]) and "nbgrader" in extras["grading"]
    for dep in [*project["dependencies"], *sum(extras.values(), [])]:
        assert "==" not in dep, f"{dep}: pins belong in requirements.lock only"


def test_contributing_lists_every_module_and_only_real_ones():
    """CONTRIBUTING.md's layout table has one row per module of the package, none stale."""
    import re

    text = (ROOT / "CONTRIBUTING.md").read_text()
    listed = set(re.findall(r"^\| `(course_lib/[\w/]+\.py)` \|", text, flags=re.M))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "course_lib").rglob("*.py")}
    assert not modules - listed, f"modules missing from CONTRIBUTING.md: {modules - listed}"
    stale = listed - modules
    assert not stale, f"CONTRIBUTING.md lists files that do not exist: {stale}"
