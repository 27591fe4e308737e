"""Tests of the command line `python -m course_lib.train`."""

import json
import subprocess
import sys

import pytest
import torch

from course_lib.train import main, time_to_accuracy


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("algo, extra", [
    ("grpo", ["--set", "beta=0.04"]),
    ("ppo", []),
    ("reinforce", ["--set", "baseline=rloo"]),
    ("dpo", ["--set", "pair_prompts=50"]),
])
def test_cli_writes_the_metrics_json(tmp_path, algo, extra):
    out = tmp_path / "m.json"
    main([algo, "--seed", "0", "--steps", "2", "--eval-every", "0", "--json", str(out),
          "--no-progress", *extra])
    m = json.loads(out.read_text())
    for key in ("accuracy_before", "accuracy_after", "steps", "samples", "wall_seconds",
                "peak_rss_mb", "parameters_held", "config", "time_to_90"):
        assert key in m, key
    assert m["steps"] == 2 and 0 <= m["accuracy_after"] <= 1
    held = m["parameters_held"]
    assert held["policy"] > 0
    assert (held["critic"] > 0) == (algo == "ppo")
    assert (held["reference"] > 0) == (algo in ("grpo", "ppo"))  # beta>0, kl_coef>0
    if algo == "dpo":
        assert m["samples"] == 50 * 8 and m["reference_logprobs_precomputed"]
    else:
        assert m["samples"] == 2 * 128


def test_cli_rejects_bad_settings(capsys):
    with pytest.raises(SystemExit):
        main(["grpo", "--set", "no_such_field=1"])
    assert "FIELD=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["grpo", "--set", "group_size=1", "--no-progress"])
    assert "group_size" in capsys.readouterr().err


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
