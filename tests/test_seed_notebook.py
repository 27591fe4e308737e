"""The seed notebook's Step 1 cell runs verbatim against course_lib.

The course grows from a draft GRPO notebook (shared/seed-notebook-04-grpo.txt, beside the
repository). Its "Step 1: Group Advantage Normalization" cell must run unchanged except
for the import line, and print mean 0 and std close to 1 as the cell itself promises.
The cell text is kept in ``reference_impls.SEED_STEP1_CELL`` so this test runs from a
clean clone; when the draft is present, the copy is checked against it.
"""

import pathlib

import pytest
from reference_impls import (
    SEED_STEP1_CELL,
    SEED_STEP1_IMPORT,
    run_seed_step1,
    seed_step1_problems,
    seed_step1_source,
)

SEED_FILE = (pathlib.Path(__file__).resolve().parents[1].parent / "shared"
             / "seed-notebook-04-grpo.txt")


def test_only_the_import_line_changes():
    source = seed_step1_source()
    old, new = SEED_STEP1_CELL.splitlines(), source.splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    assert changed == [(SEED_STEP1_IMPORT,
                        "from course_lib import compute_group_advantages, grpo_loss")]


def test_step1_cell_prints_mean_0_and_std_close_to_1():
    out = run_seed_step1()
    assert seed_step1_problems(out) == [], out
    lines = out.splitlines()
    assert lines[0] == "GRPO functions imported"
    assert lines[1] == "Group rewards:     [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]"
    # 3 correct of 8, unbiased group std 0.5175492 (see test_grpo.py): wrong answers
    # -0.375 / 0.5175502 = -0.7245674 -> -0.725, right 0.625 / 0.5175502 = 1.2076 -> 1.208
    assert lines[2] == ("Group advantages:  [-0.725, 1.208, -0.725, 1.208, -0.725, -0.725, "
                        "1.208, -0.725]")
    # std of the advantages = std_g / (std_g + 1e-6) = 0.999998
    assert lines[4] == "Std:  0.999998 (should be ~1)"
    assert lines[3] in ("Mean: 0.000000 (should be 0)", "Mean: -0.000000 (should be 0)")


@pytest.mark.skipif(not SEED_FILE.exists(), reason="shared/ draft notebook not beside repo")
def test_cell_copy_matches_the_draft_notebook():
    text = SEED_FILE.read_text()
    start = text.index(SEED_STEP1_IMPORT)
    end = text.index("## Step 2", start)
    assert text[start:end].strip() == SEED_STEP1_CELL.strip()
