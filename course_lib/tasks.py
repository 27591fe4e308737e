"""Verifiable tasks over a character vocabulary: the course's running example and the R1 task.

Chapter: "A tiny language model and a verifiable task" (the running example) and
"The R1 connection" (multi-step sums).

Two task families, both with a programmatic verifier (reward 1 for the exact final answer):

* :class:`AdditionTask` -- the running example of the whole course. ``a+b`` with ``a, b`` in
  ``0..49`` written with two digits (``"07+38="``); the completion is the answer digits then
  the end-of-sequence character (``"45$"``). 2000 training and 500 held-out pairs, split
  deterministically by the seed.
* :class:`MultiStepSumTask` -- several two-digit numbers (``"12+34+56+07="``). The model may
  answer directly (``"109$"``) or write partial sums first (``"46;102;109$"``). Only the
  final number is rewarded, as in DeepSeek-R1's rule-based accuracy reward: the partial sums
  are never checked, so writing them pays off only if it makes the final answer right.

Conventions shared with :mod:`course_lib.model` and the trainers:

* One character is one token; ``VOCAB[0]`` is the end-of-sequence character ``EOS = "$"``,
  which is also used as padding (padded positions are always masked out).
* All prompts of a task have the same length (``task.prompt_len``), so a batch of prompts is a
  plain ``(B, P)`` tensor without padding; completions are right-padded and masked after EOS.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import torch

from course_lib._checks import check_choice

__all__ = [
    "SPLITS",
    "TASKS",
    "VOCAB",
    "EOS",
    "EOS_ID",
    "PAD_ID",
    "encode",
    "decode",
    "AdditionTask",
    "MultiStepSumTask",
]

#: The two prompt splits of every task: "train" (RL and SFT) and "test" (held out).
SPLITS = ("train", "test")
#: End-of-sequence character (also the padding token; padding is always masked).
EOS = "$"
#: The character vocabulary. Token id = index in this string; ``VOCAB[0]`` is EOS.
VOCAB = EOS + "0123456789+=;"
EOS_ID = 0
PAD_ID = EOS_ID
_STOI = {ch: i for i, ch in enumerate(VOCAB)}


def encode(text: str) -> torch.Tensor:
    """Characters -> token ids, a ``(len(text),)`` LongTensor. Unknown characters: ValueError."""
    bad = sorted({ch for ch in text if ch not in _STOI})
    if bad:
        raise ValueError(f"characters {bad!r} are not in the vocabulary {VOCAB!r}")
    return torch.tensor([_STOI[ch] for ch in text], dtype=torch.long)


def decode(ids: torch.Tensor | Sequence[int], stop_at_eos: bool = True) -> str:
    """Token ids -> text. With ``stop_at_eos`` the text ends at (and includes) the first EOS,
    so the padding after it is dropped: ``decode([5, 4, 0, 0]) == "43$"``."""
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"decode expects a 1-D tensor of ids, got shape {tuple(ids.shape)}")
        ids = ids.tolist()
    out = []
    for i in ids:
        if not 0 <= int(i) < len(VOCAB):
            raise ValueError(f"token id {i} is outside the vocabulary (size {len(VOCAB)})")
        out.append(VOCAB[int(i)])
        if stop_at_eos and int(i) == EOS_ID:
            break
    return "".join(out)


class _ArithmeticTask:
    """Shared machinery: splits, encoding, batched rewards. Subclasses define the prompts,
    the answer of a prompt and the supervised target used by the warm start."""

    #: short name used in cache keys and logs
    name = "task"
    train: list[str]
    test: list[str]
    max_new_tokens: int

    vocab = VOCAB
    eos_id = EOS_ID
    pad_id = PAD_ID

    # -- encoding -----------------------------------------------------------------------
    @staticmethod
    def encode(text: str) -> torch.Tensor:
        """Characters -> ``(len(text),)`` LongTensor (see :func:`encode`)."""
        return encode(text)

    @staticmethod
    def decode(ids: torch.Tensor | Sequence[int], stop_at_eos: bool = True) -> str:
        """Token ids -> text, cut after the first EOS (see :func:`decode`)."""
        return decode(ids, stop_at_eos=stop_at_eos)

    @property
    def prompt_len(self) -> int:
        """Length P of every prompt (all prompts of a task have the same length)."""
        return len(self.train[0])

    def split(self, split: str) -> list[str]:
        """The prompts of ``split`` (one of :data:`SPLITS`)."""
        check_choice("split", split, SPLITS)
        return self.train if split == "train" else self.test

    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """A list of B prompts -> ``(B, P)`` LongTensor (no padding needed)."""
        if len(prompts) == 0:
            raise ValueError("encode_prompts got an empty list of prompts")
        lengths = {len(p) for p in prompts}
        if len(lengths) != 1:
            raise ValueError(f"prompts of one task must have equal length, got {sorted(lengths)}")
        return torch.stack([encode(p) for p in prompts])  # (B, P)

    # -- verifier -----------------------------------------------------------------------
    def answer(self, prompt: str) -> str:
        """The exact final answer (digits) of ``prompt``."""
        raise NotImplementedError

    def _final_answer(self, completion: str) -> str | None:
        """The final answer written in ``completion``, or None if malformed."""
        raise NotImplementedError

    @staticmethod
    def _strip(text: str) -> str:
        # Cut at the first EOS: anything after it is padding. Text without EOS (a truncated
        # completion, or TRL's decode with skip_special_tokens) is taken as it is.
        return text.split(EOS, 1)[0]

    def is_correct(self, prompt: str, completion: str) -> bool:
        """True iff the completion's final answer is exactly the answer of ``prompt``."""
        final = self._final_answer(self._strip(completion))
        return final is not None and final == self.answer(prompt)

    def is_well_formed(self, completion: str) -> bool:
        """True iff the completion follows the task's answer format (correct or not)."""
        return self._final_answer(self._strip(completion)) is not None

    def reward(self, prompt: str, completion: str) -> float:
        """Binary accuracy reward (1.0 for the exact final answer, else 0.0), plus
        ``format_reward`` if the completion is well formed (0 by default)."""
        r = 1.0 if self.is_correct(prompt, completion) else 0.0
        if self.format_reward and self.is_well_formed(completion):
            r += self.format_reward
        return r

    def rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """Batched :meth:`reward`: ``(B,)`` float tensor."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return torch.tensor([self.reward(p, c) for p, c in zip(prompts, completions, strict=True)],
                            dtype=torch.float32)

    def sft_completion(self, prompt: str, rng: random.Random) -> str:
        """A correct completion (ending with EOS) to imitate during the warm start."""
        return self.answer(prompt) + EOS

    def cache_key(self) -> str:
        """A string that identifies the task's data (used to name the warm-start cache)."""
        raise NotImplementedError

    @staticmethod
    def _check_sizes(n_train: int, n_test: int, available: int) -> None:
        if n_train < 1:
            raise ValueError(f"n_train must be >= 1 (an empty task cannot be trained), "
                             f"got {n_train}")
        if n_test < 1:
            raise ValueError(f"n_test must be >= 1 (an empty held-out split cannot be "
                             f"evaluated), got {n_test}")
        if n_train + n_test > available:
            raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {available} "
                             "distinct prompts of this task")


class AdditionTask(_ArithmeticTask):
    """``a+b`` with two-digit operands: the course's running example.

    Prompt ``f"{a:02d}+{b:02d}="`` (P = 6 characters); target completion ``str(a + b) + "$"``
    (2 or 3 tokens), so ``max_new_tokens = 4`` leaves room for one wrong extra token.
    All ``(max_operand + 1)**2`` pairs are shuffled with ``random.Random(seed)``; the first
    ``n_train`` are the training prompts and the next ``n_test`` the held-out prompts.

    Args:
        seed: seed of the train/held-out split.
        n_train: number of training prompts (default 2000).
        n_test: number of held-out prompts (default 500).
        max_operand: operands are in ``0..max_operand`` (at most 99; default 49).
        format_reward: extra reward for a well-formed answer (digits then EOS); default 0.
    """

    name = "addition"

    def __init__(self, seed: int = 0, n_train: int = 2000, n_test: int = 500,
                 max_operand: int = 49, format_reward: float = 0.0):
        if not 0 <= max_operand <= 99:
            raise ValueError(f"max_operand must be in 0..99 (two digits), got {max_operand}")
        self._check_sizes(n_train, n_test, (max_operand + 1) ** 2)
        self.seed, self.n_train, self.n_test = seed, n_train, n_test
        self.max_operand, self.format_reward = max_operand, float(format_reward)
        pairs = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
        random.Random(seed).shuffle(pairs)
        self.train = [f"{a:02d}+{b:02d}=" for a, b in pairs[:n_train]]
        self.test = [f"{a:02d}+{b:02d}=" for a, b in pairs[n_train:n_train + n_test]]
        self.max_new_tokens = 4

    def answer(self, prompt: str) -> str:
        a, b = prompt.rstrip("=").split("+")
        return str(int(a) + int(b))

    def _final_answer(self, completion: str) -> str | None:
        return completion if re.fullmatch(r"\d+", completion) else None

    def cache_key(self) -> str:
        return (f"addition-s{self.seed}-n{self.n_train}-{self.n_test}-m{self.max_operand}")

    def __repr__(self) -> str:
        return (f"AdditionTask(seed={self.seed}, n_train={self.n_train}, n_test={self.n_test}, "
                f"max_operand={self.max_operand})")


class MultiStepSumTask(_ArithmeticTask):
    """Sum of ``n_terms`` two-digit numbers, with optional written partial sums (R1 task).

    Prompt ``"12+34+56+07="``. Two answer formats are accepted:

    * direct: ``"109$"``;
    * step by step: the running partial sums separated by ``;``, the last one being the
      answer: ``"46;102;109$"``.

    The reward looks only at the final number (the partial sums are not checked), exactly
    like an outcome reward. The warm start imitates a mix of both formats
    (``step_prob`` = share of step-by-step targets), so GRPO can discover which one pays off.

    Args:
        seed: seed of the prompt generator and split.
        n_terms: how many numbers are added (>= 2).
        n_train, n_test: split sizes (distinct prompts).
        max_operand: numbers are in ``0..max_operand`` (at most 99).
        step_prob: probability that a warm-start target is written step by step.
        format_reward: extra reward for a well-formed completion; default 0.
    """

    name = "multisum"

    def __init__(self, seed: int = 0, n_terms: int = 4, n_train: int = 2000, n_test: int = 500,
                 max_operand: int = 49, step_prob: float = 0.5, format_reward: float = 0.0):
        if n_terms < 2:
            raise ValueError(f"n_terms must be >= 2, got {n_terms}")
        if not 0 <= max_operand <= 99:
            raise ValueError(f"max_operand must be in 0..99 (two digits), got {max_operand}")
        if not 0.0 <= step_prob <= 1.0:
            raise ValueError(f"step_prob must be in [0, 1], got {step_prob}")
        self._check_sizes(n_train, n_test, (max_operand + 1) ** n_terms)
        self.seed, self.n_terms, self.n_train, self.n_test = seed, n_terms, n_train, n_test
        self.max_operand, self.step_prob = max_operand, float(step_prob)
        self.format_reward = float(format_reward)
        rng = random.Random(seed)
        seen: set[tuple[int, ...]] = set()
        prompts = []
        while len(prompts) < n_train + n_test:
            t = tuple(rng.randint(0, max_operand) for _ in range(n_terms))
            if t not in seen:
                seen.add(t)
                prompts.append("+".join(f"{x:02d}" for x in t) + "=")
        self.train, self.test = prompts[:n_train], prompts[n_train:]
        # longest step-by-step answer: (n_terms - 1) partial sums of <= 3 digits, separators, EOS
        width = len(str(max_operand * n_terms))
        self.max_new_tokens = (n_terms - 1) * (width + 1) + 2

    def terms(self, prompt: str) -> list[int]:
        """The numbers of ``prompt``."""
        return [int(x) for x in prompt.rstrip("=").split("+")]

    def answer(self, prompt: str) -> str:
        return str(sum(self.terms(prompt)))

    def steps_text(self, prompt: str) -> str:
        """The step-by-step answer without EOS, e.g. ``"46;102;109"``."""
        xs, partial, out = self.terms(prompt), 0, []
        for i, x in enumerate(xs):
            partial += x
            if i >= 1:
                out.append(str(partial))
        return ";".join(out)

    def _final_answer(self, completion: str) -> str | None:
        if not re.fullmatch(r"(\d+;)*\d+", completion):
            return None
        return completion.rsplit(";", 1)[-1]

    def is_step_by_step(self, completion: str) -> bool:
        """True iff the completion writes at least one partial sum before the answer."""
        return ";" in self._strip(completion)

    def sft_completion(self, prompt: str, rng: random.Random) -> str:
        if rng.random() < self.step_prob:
            return self.steps_text(prompt) + EOS
        return self.answer(prompt) + EOS

    def cache_key(self) -> str:
        return (f"multisum-s{self.seed}-k{self.n_terms}-n{self.n_train}-{self.n_test}"
                f"-m{self.max_operand}-p{self.step_prob}")

    def __repr__(self) -> str:
        return (f"MultiStepSumTask(seed={self.seed}, n_terms={self.n_terms}, "
                f"n_train={self.n_train}, n_test={self.n_test}, step_prob={self.step_prob})")


#: Task name (the command line's ``--task``) -> task class.
TASKS = {"addition": AdditionTask, "multisum": MultiStepSumTask}
