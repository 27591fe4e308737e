"""Tests of the command line `python -m course_lib.train`, generated from the configs."""

import ast
import dataclasses
import inspect
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from course_lib import recipes
from course_lib.train import main, time_to_accuracy
from course_lib.trainers import TRAINERS


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("algo, extra", [
    ("grpo", ["--beta", "0.04"]),
    ("ppo", []),
    ("reinforce", ["--baseline", "rloo"]),
    ("dpo", ["--pair-prompts", "50"]),
])
def test_cli_writes_the_metrics_json(tmp_path, algo, extra):
    out = tmp_path / "m.json"
    main([algo, "--seed", "0", "--steps", "2", "--eval-every", "0", "--json", str(out),
          "--no-progress", *extra])
    m = json.loads(out.read_text())
    assert set(m) == {
        "algorithm", "seed", "task", "accuracy_before", "accuracy_after", "steps", "samples",
        "wall_seconds", "time_to_90", "time_to_95", "peak_rss_mb", "peak_rss_before_train_mb",
        "memory_measure", "parameters_held", "reference_logprobs_precomputed", "threads",
        "config", "model_config", "sft_config", "warm_start", "eval", "final_reward_mean",
        "response_len"}
    assert m["steps"] == 2 and 0 <= m["accuracy_after"] <= 1
    held = m["parameters_held"]
    assert held["policy"] > 0
    assert (held["critic"] > 0) == (algo == "ppo")
    assert (held["reference"] > 0) == (algo in ("grpo", "ppo"))  # beta>0, kl_coef>0
    if algo == "dpo":
        assert m["samples"] == 50 * 8 and m["reference_logprobs_precomputed"]
    else:
        assert m["samples"] == 2 * 128


def field_docstrings(cls) -> dict[str, str]:
    """Attribute docstrings (the string under each field) of a dataclass and its bases."""
    docs = {}
    for klass in reversed(cls.__mro__[:-1]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for a, b in zip(body, body[1:], strict=False):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) \
                    and isinstance(b.value, ast.Constant):
                docs[a.target.id] = b.value.value
    return docs


@pytest.mark.parametrize("algo", sorted(TRAINERS))
def test_help_lists_every_config_field_with_its_default_and_docstring(algo, capsys):
    """--help is generated from the config dataclass: every field with its default and its
    docstring (written once, in the config; grpo's defaults are the recipe's)."""
    config_cls = TRAINERS[algo][1]
    defaults = recipes.grpo_config() if algo == "grpo" else config_cls()
    with pytest.raises(SystemExit) as exit_:
        main([algo, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())  # unwrap the boxes
    docs = field_docstrings(config_cls)
    for f in dataclasses.fields(config_cls):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
        assert " ".join(docs[f.name].split()[:4]) in text, f.name
        default = getattr(defaults, f.name)
        if not isinstance(default, tuple | bool):
            assert f"(default: {default})" in text, f.name
    for key in ("--task {addition,multisum}", "--json", "--threads", "--no-progress",
                "--model.n-layer"):
        assert key in text


def test_help_rewraps_multi_line_field_docstrings(capsys, monkeypatch):
    """A wide terminal gets each option's docstring on one line: its source line breaks
    (and their indentation) do not reach --help."""
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["reinforce", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for start in ("DAPO's dynamic sampling: drop", "uniform: passes over the shuffled",
                  "Backpropagate through the sampling pass"):
        line = next(x for x in lines if start in x)
        assert "(default: " in line, line  # the whole docstring, then its default


def test_cli_rejects_bad_settings(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["grpo", "--no-such-field", "1"])
    assert exit_.value.code == 2 and "no-such-field" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["grpo", "--group-size", "1", "--no-progress"])
    assert exit_.value.code == 2 and "group_size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grpo", "--loss-type", "ppo"])
    assert "ppo" in capsys.readouterr().err


def test_time_to_accuracy_reads_the_eval_curve():
    h = {"eval_step": [0, 10, 20], "eval_accuracy": [0.3, 0.92, 0.96],
         "eval_wall": [0.0, 5.0, 9.0], "eval_samples": [0, 1280, 2560]}
    assert time_to_accuracy(h, 0.9) == {"wall": 5.0, "step": 10, "samples": 1280}
    assert time_to_accuracy(h, 0.99) is None


@pytest.mark.slow
def test_module_entry_point_runs(tmp_path):
    out = tmp_path / "m.json"
    r = subprocess.run([sys.executable, "-m", "course_lib.train", "grpo", "--steps", "1",
                        "--eval-every", "0", "--json", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "held-out accuracy" in r.stdout and out.exists()


@pytest.mark.slow
def test_grpo_with_no_options_runs_the_recipe_and_reaches_95_percent(tmp_path):
    """Issue 13: `python -m course_lib.train grpo` is the fast recipe (course_lib.recipes)
    and reaches 95% held-out accuracy (seed 0; every seed is benchmarks/bench_converge.py's)."""
    out = tmp_path / "m.json"
    main(["grpo", "--no-progress", "--json", str(out)])
    m = json.loads(out.read_text())
    def as_json(config):
        return json.loads(json.dumps(dataclasses.asdict(config)))
    assert m["config"] == as_json(recipes.grpo_config())
    assert m["model_config"] == as_json(recipes.model_config())
    assert m["sft_config"] == as_json(recipes.sft_config())
    assert m["accuracy_after"] >= 0.95 and m["steps"] < 800
