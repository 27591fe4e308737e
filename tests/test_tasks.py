"""Tests of course_lib.tasks: the running example's split, encoding and verifier."""

import pytest

from course_lib.tasks import EOS, EOS_ID, VOCAB, AdditionTask, MultiStepSumTask, decode, encode


def test_addition_split_sizes_disjoint_and_deterministic():
    t = AdditionTask(seed=0)
    assert len(t.train) == 2000 and len(t.test) == 500
    assert not set(t.train) & set(t.test)  # held-out prompts are never trained on
    assert len(set(t.train)) == 2000
    assert t.train == AdditionTask(seed=0).train
    assert t.train != AdditionTask(seed=1).train  # the seed changes the split
    assert {len(p) for p in t.train + t.test} == {6} and t.prompt_len == 6
    assert all(p[2] == "+" and p[5] == "=" for p in t.train)


def test_encode_decode_roundtrip_and_eos():
    assert VOCAB[EOS_ID] == EOS
    ids = encode("07+38=45" + EOS)
    assert decode(ids) == "07+38=45$"
    # decode stops at the first EOS: what follows is padding
    assert decode(encode("45$$$")) == "45$"
    assert decode(encode("45$9"), stop_at_eos=False) == "45$9"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("7*8")


@pytest.mark.parametrize("completion, reward", [
    ("45$", 1.0), ("45", 1.0),        # with EOS, or with EOS stripped (TRL decodes without it)
    ("45$9", 1.0),                    # after EOS is padding
    ("46$", 0.0), ("4$", 0.0), ("455$", 0.0), ("045$", 0.0), ("", 0.0), ("$", 0.0),
    ("4+5$", 0.0),
])
def test_addition_reward_exact_answer_only(completion, reward):
    t = AdditionTask(seed=0)
    assert t.reward("07+38=", completion) == reward


def test_format_reward_is_added_for_well_formed_answers():
    t = AdditionTask(seed=0, format_reward=0.1)
    assert t.reward("07+38=", "45$") == pytest.approx(1.1)
    assert t.reward("07+38=", "44$") == pytest.approx(0.1)
    assert t.reward("07+38=", "4+$") == 0.0


def test_rewards_batched_matches_single():
    t = AdditionTask(seed=0)
    prompts = t.train[:5]
    comps = [t.answer(p) + EOS if i % 2 == 0 else "0$" for i, p in enumerate(prompts)]
    r = t.rewards(prompts, comps)
    assert r.tolist() == [t.reward(p, c) for p, c in zip(prompts, comps, strict=True)]


def test_multistep_formats_and_reward_only_on_final_answer():
    t = MultiStepSumTask(seed=0, n_terms=4)
    p = "12+34+56+07="
    assert t.answer(p) == "109"
    assert t.steps_text(p) == "46;102;109"
    assert t.reward(p, "109$") == 1.0
    assert t.reward(p, "46;102;109$") == 1.0
    assert t.reward(p, "1;2;109$") == 1.0       # partial sums are not checked (outcome reward)
    assert t.reward(p, "46;102;108$") == 0.0
    assert t.reward(p, "46;;109$") == 0.0       # malformed
    assert t.is_step_by_step("46;102;109$") and not t.is_step_by_step("109$")
    assert len(t.steps_text(p)) + 1 <= t.max_new_tokens
    assert not set(t.train) & set(t.test)


def test_sft_mix_contains_both_formats():
    import random
    t = MultiStepSumTask(seed=0, step_prob=0.5)
    rng = random.Random(0)
    comps = [t.sft_completion(p, rng) for p in t.train[:200]]
    steps = sum(t.is_step_by_step(c) for c in comps)
    assert 60 < steps < 140
    assert all(t.reward(p, c) == 1.0 for p, c in zip(t.train[:200], comps, strict=True))


@pytest.mark.parametrize("kwargs, msg", [
    ({"n_train": 0}, "empty task"),
    ({"n_test": 0}, "held-out"),
    ({"n_train": 2500, "n_test": 1}, "exceeds"),
    ({"max_operand": 100}, "two digits"),
])
def test_addition_bad_config(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        AdditionTask(**kwargs)


def test_multistep_bad_config():
    with pytest.raises(ValueError, match="n_terms"):
        MultiStepSumTask(n_terms=1)
    with pytest.raises(ValueError, match="step_prob"):
        MultiStepSumTask(step_prob=1.5)
    with pytest.raises(ValueError, match="empty task"):
        MultiStepSumTask(n_train=0)


def test_split_name_checked():
    with pytest.raises(ValueError, match="split"):
        AdditionTask().split("valid")
