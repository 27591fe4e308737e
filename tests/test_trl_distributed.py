"""Distributed smoke test: the TRL script on 2 CPU processes (gloo) trains and improves.

Runs exactly what the chapter tells readers to run (``accelerate launch --config_file
configs/accelerate/cpu_2proc.yaml scripts/trl_grpo.py``) for 100 steps of 16 prompts x 8
completions from the cached warm start, and checks that two processes took part and that
the verifier's reward on the 500 held-out prompts (greedy accuracy) went up. The per-step
training reward is logged too, but over 100 steps of 128 samples it is too noisy to be the
criterion. About 25-40 s on 2 cores (plus the warm start the first time, cached after).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("trl")


@pytest.mark.slow
def test_trl_grpo_on_two_cpu_processes(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "the accelerate command must be installed next to this python"
    # build (or load) the warm start once, outside the 2-process run
    subprocess.run([sys.executable, "-c", "from course_lib.tasks import AdditionTask; "
                    "from course_lib.trl_bridge import warm_start_hf; "
                    "warm_start_hf(AdditionTask(seed=0), seed=0)"], check=True, cwd=ROOT)
    out = tmp_path / "result.json"
    cmd = [accelerate, "launch", "--config_file", "configs/accelerate/cpu_2proc.yaml",
           "scripts/trl_grpo.py", "--steps", "100", "--lr", "3e-4", "--seed", "0",
           "--output-dir", str(tmp_path / "run"), "--json", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["num_processes"] == 2, "accelerate started only one process"
    assert r["steps"] == 100 and len(r["reward"]) == 100
    assert all(0.0 <= x <= 1.0 for x in r["reward"])
    assert r["accuracy_after"] > r["accuracy_before"] + 0.02, (
        f"held-out reward did not improve: {r['accuracy_before']} -> {r['accuracy_after']}")
