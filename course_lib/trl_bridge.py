"""The course's task, reward, model and GRPO settings on Hugging Face TRL.

Chapter: "Scaling up with TRL" (``book/07_trl.ipynb``).

Everything a :class:`trl.GRPOTrainer` needs, built locally from the course's own pieces so
that the course's trainer and TRL's can run on one model from one warm start:

==========================  ================================================================
course_lib                  Hugging Face / TRL (this module)
==========================  ================================================================
``AdditionTask.train``      :func:`build_dataset`: ``datasets.Dataset`` with a ``prompt``
                            column of plain text (``"07+38="``) and the ``answer``
``task.reward``             :func:`make_reward_func`: TRL reward function (same verifier)
``tasks.VOCAB``             :func:`build_tokenizer`: ``PreTrainedTokenizerFast``, one token
                            per character, the same ids (``"$"`` = 0 = EOS = padding)
``model.TinyGPT``           :func:`to_hf` / :func:`build_model`: ``GPT2LMHeadModel`` from a
                            config (2 layers, width 128), the same function, no download
``sft.warm_start``          :func:`warm_start_hf`: the same warm start, as a GPT-2
``trainers.GRPOConfig``     :func:`to_trl_config`: ``trl.GRPOConfig``
``grpo_loss``               TRL's ``GRPOTrainer._compute_loss`` (:func:`trl_loss` calls it on
                            a prepared batch; ``tests/test_trl_bridge.py`` checks equality)
==========================  ================================================================

TRL's defaults differ from the papers and from the course: ``beta=0.0`` since v0.19 (no
reference model), ``loss_type="dapo"`` (DAPO's token-level mean, not DeepSeekMath Eq. 3's
per-sequence mean), ``use_bias_correction_kl=True`` (the k3 KL of Eq. 4 multiplied by the
importance ratio, as in DeepSeek-V3.2), ``learning_rate=1e-6`` with linear decay,
``bf16=True`` and gradient checkpointing on. :func:`to_trl_config` sets every one of them
explicitly from the course config, so nothing is left to defaults; with it, TRL's loss is
exactly :func:`course_lib.grpo_loss` (DeepSeekMath Eq. 3 with the k3 KL of Eq. 4, and the
DAPO / Dr. GRPO aggregations), which ``tests/test_trl_bridge.py`` checks to 1e-5.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

try:  # the one course_lib module that needs Hugging Face's libraries
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - exercised in a subprocess by test_layers
    raise ImportError("course_lib.trl_bridge needs transformers and trl: "
                      "pip install 'course_lib[trl]'") from e

from course_lib import recipes
from course_lib.evaluate import evaluate
from course_lib.model import ModelConfig, TinyGPT
from course_lib.tasks import EOS, EOS_ID, VOCAB
from course_lib.trainers.grpo import GRPOConfig

__all__ = [
    "build_tokenizer",
    "gpt2_config",
    "to_hf",
    "build_model",
    "build_dataset",
    "warm_start_hf",
    "make_reward_func",
    "to_trl_config",
    "make_trl_trainer",
    "trl_loss",
    "HeldOutAccuracy",
    "TRL_CPU_DEFAULTS",
]

#: What a CPU run of a tiny model needs instead of TRL's GPU-oriented defaults.
TRL_CPU_DEFAULTS: dict[str, Any] = {
    "bf16": False,  # TRL default True: bf16 autocast is slow on CPU and changes the numbers
    "fp16": False,
    # TRL default gradient_checkpointing=True: saves memory, costs ~20% time. (Set through
    # the new name: transformers 5 deprecates `gradient_checkpointing`, which mirrors it.)
    "activation_checkpointing": False,
    "use_cpu": True,
    "report_to": "none",  # no wandb/tensorboard
    "save_strategy": "no",
    "logging_steps": 1,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "log_completions": False,
    "shuffle_dataset": True,
}


# -- tokenizer and model -----------------------------------------------------------------
def build_tokenizer(vocab: str = VOCAB, eos: str = EOS):
    """A character-level ``PreTrainedTokenizerFast`` with the course's token ids.

    One character is one token and the id of a character is its index in ``vocab``
    (``course_lib.tasks.VOCAB``), so ``tok(text)["input_ids"] == task.encode(text)`` and
    weights trained with the course's encoding transfer unchanged. ``eos`` (``"$"``, id 0) is
    the EOS and the padding token, as in the course; no BOS is added.

    Returns:
        ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if len(set(vocab)) != len(vocab):
        raise ValueError(f"vocab has repeated characters: {vocab!r}")
    if eos not in vocab:
        raise ValueError(f"eos {eos!r} is not in the vocabulary {vocab!r}")
    tok = Tokenizer(models.WordLevel(vocab={ch: i for i, ch in enumerate(vocab)}, unk_token=None))
    # split every character off on its own: "07+38=" -> ["0", "7", "+", "3", "8", "="]
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()  # join the characters back without spaces
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=eos, pad_token=eos, padding_side="left",
        model_max_length=1024,
    )
    return hf




def gpt2_config(model_config: ModelConfig):
    """The ``transformers.GPT2Config`` with exactly the architecture of a :class:`TinyGPT`.

    TinyGPT is GPT-2's block (Radford et al. 2019: pre-LayerNorm, learned positions, GELU
    MLP of width 4C, final LayerNorm) with two differences that the config reproduces: the
    output head is not tied to the token embedding (``tie_word_embeddings=False``) and the
    GELU is the exact one (``activation_function="gelu"``, GPT-2 uses the tanh
    approximation). Dropout follows ``model_config.dropout`` (0 by default); EOS = pad = 0.
    """
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=model_config.vocab_size, n_positions=model_config.block_size,
        n_embd=model_config.n_embd, n_layer=model_config.n_layer, n_head=model_config.n_head,
        activation_function="gelu", tie_word_embeddings=False, layer_norm_epsilon=1e-5,
        resid_pdrop=model_config.dropout, embd_pdrop=model_config.dropout,
        attn_pdrop=model_config.dropout,
        bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
    )


def to_hf(model: TinyGPT):
    """A ``transformers.GPT2LMHeadModel`` computing the same function as a :class:`TinyGPT`.

    Weights are copied (not shared): GPT-2's ``Conv1D`` layers store ``(in, out)`` matrices,
    the transpose of ``nn.Linear``'s. Logits agree to float32 rounding
    (``tests/test_trl_bridge.py``), so a warm start trained with the course's code runs
    unchanged in TRL. The result is in the same train/eval mode as ``model``.
    """
    from transformers import GPT2LMHeadModel

    if not isinstance(model, TinyGPT):
        raise ValueError(f"to_hf converts a course_lib TinyGPT, got {type(model).__name__}")
    hf = GPT2LMHeadModel(gpt2_config(model.config))
    src = model.state_dict()
    state = {
        "transformer.wte.weight": src["tok_emb.weight"],  # (V, C)
        "transformer.wpe.weight": src["pos_emb.weight"],  # (block_size, C)
        "transformer.ln_f.weight": src["ln_f.weight"],
        "transformer.ln_f.bias": src["ln_f.bias"],
        "lm_head.weight": src["head.weight"],  # (V, C)
    }
    pairs = [("ln_1", "ln_1", False), ("ln_2", "ln_2", False),
             ("attn.c_attn", "attn.c_attn", True), ("attn.c_proj", "attn.c_proj", True),
             ("mlp.0", "mlp.c_fc", True), ("mlp.2", "mlp.c_proj", True)]
    for i in range(model.config.n_layer):
        for ours, theirs, transpose in pairs:
            w = src[f"blocks.{i}.{ours}.weight"]
            state[f"transformer.h.{i}.{theirs}.weight"] = w.t().contiguous() if transpose else w
            state[f"transformer.h.{i}.{theirs}.bias"] = src[f"blocks.{i}.{ours}.bias"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias")]  # causal-mask buffers
    if missing or unexpected:
        raise RuntimeError(f"TinyGPT -> GPT-2 mapping incomplete: missing {missing}, "
                           f"unexpected {unexpected}")
    hf.generation_config.pad_token_id = EOS_ID
    hf.generation_config.eos_token_id = EOS_ID
    hf.train(model.training)
    return hf


def build_model(seed: int = 0, **size: int):
    """A tiny GPT-2 (``transformers.GPT2LMHeadModel``) built from a config, no download.

    Default size :data:`course_lib.recipes.MODEL` (2 layers, width 128, 4 heads, 32 positions) over
    the course's 14-character vocabulary, dropout 0 (RL compares log-probs of the same
    tokens under the same weights: dropout would make them random). The initial weights are
    those of ``TinyGPT(ModelConfig(**size), seed=seed)`` (GPT-2's initialisation), so they
    depend only on ``seed``; the global RNG is left untouched.
    """
    return to_hf(TinyGPT(recipes.model_config(**size), seed=seed))


def warm_start_hf(task, seed: int = 0, sft_config=None, use_cache: bool = True, **size: int):
    """The course's supervised warm start (:func:`course_lib.sft.warm_start`) as a GPT-2.

    The SFT (default :func:`course_lib.recipes.sft_config`) runs on a :class:`TinyGPT` of
    size :data:`course_lib.recipes.MODEL` (overridable with ``size``) and is cached on disk by
    :mod:`course_lib.sft`; the result is converted with :func:`to_hf`. The course's trainer
    and TRL's then start from the very same weights.

    Returns:
        ``GPT2LMHeadModel`` in eval mode with ``warm_start_info`` (SFT steps, check accuracy,
        cache path, cache hit).
    """
    from course_lib.sft import warm_start

    tiny = warm_start(task, seed=seed, model_config=recipes.model_config(**size),
                      sft_config=sft_config or recipes.sft_config(), use_cache=use_cache)
    hf = to_hf(tiny)
    hf.warm_start_info = dict(tiny.warm_start_info)
    return hf


# -- data and reward ---------------------------------------------------------------------
def build_dataset(task, split: str = "train"):
    """The prompts of ``task.split(split)`` as a ``datasets.Dataset`` (in memory).

    Columns: ``prompt`` (plain text such as ``"07+38="``, not a chat: the tiny model has no
    chat template) and ``answer`` (the exact answer digits; TRL passes extra columns to the
    reward function, and to the log).
    """
    import datasets

    prompts = task.split(split)
    return datasets.Dataset.from_dict(
        {"prompt": list(prompts), "answer": [task.answer(p) for p in prompts]}
    )


def make_reward_func(task) -> Callable[..., list[float]]:
    """The task's verifier as a TRL reward function (``task.reward`` per completion).

    TRL calls ``f(prompts=..., completions=..., completion_ids=..., **columns)`` with one
    entry per completion and expects one float each. TRL's completion text is decoded
    with ``skip_special_tokens`` (the EOS ``"$"`` is dropped), so the token ids are decoded
    with the course's own :func:`course_lib.tasks.decode` instead: the reward is then
    exactly ``task.reward(prompt, completion)`` as the course computes it.
    """

    def accuracy(prompts: Sequence[str], completions: Sequence[str],
                 completion_ids: Sequence[Sequence[int]] | None = None,
                 **kwargs: Any) -> list[float]:
        if completion_ids is not None:
            completions = [task.decode(ids) for ids in completion_ids]
        return [task.reward(p, c) for p, c in zip(prompts, completions, strict=True)]

    return accuracy


# -- configuration -----------------------------------------------------------------------
def to_trl_config(cfg: GRPOConfig | None = None, task=None, output_dir: str = "trl_output",
                  num_processes: int = 1, **overrides: Any):
    """Map the course's :class:`~course_lib.trainers.grpo.GRPOConfig` to ``trl.GRPOConfig``.

    ================================  =========================================  ============
    course_lib ``GRPOConfig``         ``trl.GRPOConfig``                         TRL default
    ================================  =========================================  ============
    ``loss_type`` ("grpo")            ``loss_type``                              "dapo"
    ``scale`` ("group")               ``scale_rewards``                          "group"
    ``beta`` (0.0)                    ``beta``                                   0.0
    ``kl_ratio_weight`` (False)       ``use_bias_correction_kl``                 True
    ``clip_eps`` / ``clip_eps_high``  ``epsilon`` / ``epsilon_high``             0.2 / =eps
    ``group_size`` (8)                ``num_generations``                        8
    ``prompts_per_step * group_size`` ``per_device_train_batch_size`` x procs    8
    ``mu`` (1)                        ``num_iterations``                         1
    ``minibatches`` (1)               ``steps_per_generation``                   = accum
    (one optimizer step per part)     ``gradient_accumulation_steps`` = 1        1
    ``steps`` x ``mu`` x minibatches  ``max_steps`` (TRL counts optimizer steps)
    ``lr``                            ``learning_rate``                          1e-6
    ``lr_schedule`` ("constant")      ``lr_scheduler_type`` (with warm-up)       "linear"
    ``warmup_steps`` (0)              ``warmup_steps`` (optimizer steps)         0
    ``max_new_tokens`` or the task's  ``max_completion_length``                  512
    ``temperature``, ``top_k``        ``temperature``, ``top_k`` (None -> 0)     1.0, 0
    ``grad_clip``                     ``max_grad_norm``                          1.0
    ``weight_decay``                  ``weight_decay``                           0.0
    ``seed``                          ``seed``                                   42
    ``adv_eps`` (1e-6)                fixed at 1e-4 inside TRL                   1e-4
    ================================  =========================================  ============

    plus :data:`TRL_CPU_DEFAULTS` (bf16 and gradient checkpointing off, CPU, no reporting).
    Both count ``warmup_steps`` in optimizer steps and follow Hugging Face's schedules
    (``i / warmup_steps``, then constant or linear decay over ``max_steps``); the course's
    "constant" is Hugging Face's "constant_with_warmup", since its "constant" ignores the
    warm-up (``tests/test_trl_bridge.py`` compares the two learning-rate sequences).
    TRL's ``per_device_train_batch_size`` counts *completions*, not prompts, per process
    and per optimizer step: with N processes and M ``minibatches`` each gets
    ``prompts_per_step * group_size / (M N)``, and one generation (TRL's generation batch)
    is the course's batch. With M > 1 both shuffle the batch's completions and split them
    into M equal parts, one optimizer step each. Two cases are refused rather than mapped
    to something else: M > 1 with ``mu`` > 1 (the course splits anew at every pass, TRL
    keeps one split for its ``num_iterations`` passes), and M > 1 with ``loss_type``
    "dapo", whose TRL form divides each part's token sum by the generation batch's mean
    tokens per part, not by the part's own tokens as the course does (TRL's "bnpo").
    ``eval_every``, ``eval_split`` and ``stop_at_accuracy`` have no TRL
    field (the benchmark evaluates from a callback).

    Args:
        cfg: a course ``GRPOConfig`` (None: its defaults).
        task: needed only when ``cfg.max_new_tokens`` is None (then the task's is used).
        output_dir: where TRL would write checkpoints (nothing is saved by default).
        num_processes: number of data-parallel processes the run is launched with.
        **overrides: any ``trl.GRPOConfig`` field, applied last (e.g. ``use_cpu=False``).

    Returns:
        ``trl.GRPOConfig``.
    """
    import trl

    cfg = GRPOConfig() if cfg is None else cfg
    if not isinstance(cfg, GRPOConfig):
        raise ValueError(f"cfg must be a course_lib GRPOConfig, got {type(cfg).__name__}")
    cfg.validate()
    if cfg.prompt_sampling != "uniform":
        raise ValueError(f"prompt_sampling={cfg.prompt_sampling!r} has no TRL field: TRL 1.16 "
                         "draws each step's prompts uniformly (its RepeatSampler); pass "
                         "dataclasses.replace(cfg, prompt_sampling='uniform')")
    if cfg.dynamic_sampling:
        raise ValueError("dynamic_sampling has no TRL 1.16 field: its GRPOTrainer trains on "
                         "every sampled group; pass dynamic_sampling=False")
    if cfg.minibatches != 1 and cfg.mu != 1:
        raise ValueError(f"minibatches={cfg.minibatches} with mu={cfg.mu} is not mapped: the "
                         "course splits the batch anew at every pass, TRL 1.16 splits each "
                         "generation batch once for all its num_iterations passes; pass mu=1 "
                         "or minibatches=1")
    if cfg.minibatches != 1 and cfg.loss_type == "dapo":
        raise ValueError(f"minibatches={cfg.minibatches} with loss_type='dapo' is not mapped: "
                         "TRL 1.16's dapo divides each minibatch's token sum by the generation "
                         "batch's mean tokens per minibatch, the course by the minibatch's own "
                         "tokens; pass loss_type='bnpo' (the course's token mean, which TRL's "
                         "bnpo computes) or minibatches=1")
    max_new = cfg.max_new_tokens or (task.max_new_tokens if task is not None else None)
    if max_new is None:
        raise ValueError("cfg.max_new_tokens is None: pass the task so that its "
                         "max_new_tokens can be used")
    batch = cfg.prompts_per_step * cfg.group_size  # completions per step, all processes
    if num_processes < 1 or batch % (num_processes * cfg.minibatches):
        raise ValueError(f"{cfg.prompts_per_step} prompts x {cfg.group_size} completions "
                         f"= {batch} cannot be split evenly over {num_processes} processes "
                         f"x {cfg.minibatches} minibatches")
    kwargs: dict[str, Any] = dict(TRL_CPU_DEFAULTS)
    kwargs.update(
        output_dir=output_dir,
        loss_type=cfg.loss_type,
        scale_rewards=cfg.scale,
        beta=cfg.beta,
        # TRL >= 1.x multiplies the per-token KL by the importance ratio by default
        # (DeepSeek-V3.2's unbiased KL gradient); DeepSeekMath Eq. 3 does not, nor the
        # course unless kl_ratio_weight: at ratio 1 the loss is the same, the gradient not.
        use_bias_correction_kl=cfg.kl_ratio_weight,
        epsilon=cfg.clip_eps,
        epsilon_high=cfg.clip_eps if cfg.clip_eps_high is None else cfg.clip_eps_high,
        num_generations=cfg.group_size,
        per_device_train_batch_size=batch // (num_processes * cfg.minibatches),
        steps_per_generation=cfg.minibatches,  # the generated batch in M parts
        gradient_accumulation_steps=1,  # one optimizer step per part, as the course
        num_iterations=cfg.mu,
        max_steps=cfg.steps * cfg.mu * cfg.minibatches,
        learning_rate=cfg.lr,
        lr_scheduler_type={"constant": "constant_with_warmup", "linear": "linear"}[
            cfg.lr_schedule],
        warmup_steps=cfg.warmup_steps,
        max_completion_length=max_new,
        temperature=cfg.temperature,
        top_k=0 if cfg.top_k is None else cfg.top_k,
        max_grad_norm=float(cfg.grad_clip or 0.0),
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
    )
    kwargs.update(overrides)
    return trl.GRPOConfig(**kwargs)


def make_trl_trainer(model, task, cfg: GRPOConfig | None = None,
                     output_dir: str = "trl_output", num_processes: int = 1,
                     callbacks: Sequence[Any] | None = None, **overrides: Any):
    """A ``trl.GRPOTrainer`` on ``model`` for ``task``, configured from the course's config.

    Dataset (:func:`build_dataset`), reward (:func:`make_reward_func`) and tokenizer
    (:func:`build_tokenizer`) come from this module, the settings from
    :func:`to_trl_config` (``overrides`` are passed on to it). With ``beta > 0`` TRL loads
    its reference model from ``model.config._name_or_path``; an in-memory model is first
    saved to a temporary folder (removed at exit), so the reference is ``model`` as it is now.
    """
    import trl

    args = to_trl_config(cfg, task=task, output_dir=output_dir, num_processes=num_processes,
                         **overrides)
    if args.beta != 0.0 and not os.path.isdir(getattr(model.config, "_name_or_path", "")):
        # With beta > 0 TRL builds the reference model by *loading* model.config._name_or_path
        # (a Hub id or a local folder). An in-memory model has neither: save its current
        # weights (the reference = the starting policy) to a private folder first.
        ref_dir = tempfile.mkdtemp(prefix="trl_reference_")
        atexit.register(shutil.rmtree, ref_dir, True)
        model.save_pretrained(ref_dir)
        model.config._name_or_path = ref_dir
    from transformers import PrinterCallback

    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=make_reward_func(task),
        args=args,
        train_dataset=build_dataset(task, "train"),
        processing_class=build_tokenizer(),
        callbacks=list(callbacks or []),
    )
    # without a progress bar the Trainer prints every log dict; they stay in
    # trainer.state.log_history (one entry per step with "reward", "loss", ...)
    trainer.remove_callback(PrinterCallback)
    return trainer


# -- TRL's loss on a prepared batch --------------------------------------------------------
def trl_loss(trainer, prompt_ids: Tensor, completion_ids: Tensor, completion_mask: Tensor,
             old_logprobs: Tensor, advantages: Tensor,
             ref_logprobs: Tensor | None = None) -> Tensor:
    """The loss TRL's ``GRPOTrainer`` computes on one prepared batch (one optimizer step).

    With the settings of :func:`to_trl_config` this is minus DeepSeekMath's objective
    (Shao et al. 2024, Eq. 3, k3 KL of Eq. 4) aggregated as ``loss_type`` says, i.e. the
    value of :func:`course_lib.grpo_loss` on the same batch.

    Builds the dict that ``GRPOTrainer._prepare_inputs`` hands to ``compute_loss`` after
    generation and scoring, then calls the trainer's own ``compute_loss``: TRL recomputes
    the per-token log-probs with its (fused) LM head, and applies its ratio, clip, KL and
    ``loss_type`` aggregation. Used by the equivalence test against
    :func:`course_lib.grpo_loss`.

    Args:
        trainer: a ``trl.GRPOTrainer`` (e.g. from :func:`make_trl_trainer`).
        prompt_ids: (B, P) prompt tokens (no padding: all prompts have the same length).
        completion_ids: (B, T) completion tokens, right-padded.
        completion_mask: (B, T) 1 on real completion tokens (up to and including EOS).
        old_logprobs: (B, T) log pi_old of the completion tokens.
        advantages: (B,) one per completion.
        ref_logprobs: (B, T) log pi_ref; required iff the trainer's beta > 0.

    Returns:
        The scalar loss, with gradient to the trainer's model. In train mode TRL divides by
        the gradient-accumulation steps of the current step; this sets them to 1 (one
        micro-batch per step, as in :func:`to_trl_config`).
    """
    B, T = completion_ids.shape
    if prompt_ids.dim() != 2 or prompt_ids.shape[0] != B:
        raise ValueError(f"prompt_ids must be (B, P) with B = {B}, got {tuple(prompt_ids.shape)}")
    for name, x in (("completion_mask", completion_mask), ("old_logprobs", old_logprobs)):
        if x.shape != (B, T):
            raise ValueError(f"{name} must have shape {(B, T)}, got {tuple(x.shape)}")
    if advantages.shape != (B,):
        raise ValueError(f"advantages must have shape ({B},), got {tuple(advantages.shape)}")
    if (trainer.beta != 0.0) != (ref_logprobs is not None):
        raise ValueError(f"ref_logprobs must be given iff beta > 0 (trainer.beta = {trainer.beta})")
    mask = completion_mask.long()  # (B, T)
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": mask,
        "old_per_token_logps": old_logprobs,
        "advantages": advantages,
        # "dapo" divides by the number of real tokens of the whole generation batch
        "num_items_in_batch": mask.sum(),
    }
    if ref_logprobs is not None:
        inputs["ref_per_token_logps"] = ref_logprobs
    # set by the Trainer's loop at each optimizer step; one micro-batch per step here
    trainer.current_gradient_accumulation_steps = 1
    return trainer.compute_loss(trainer.model, inputs)


# -- held-out accuracy during a TRL run ------------------------------------------------------
class HeldOutAccuracy(TrainerCallback):
    """A ``transformers.TrainerCallback``: greedy held-out accuracy during a TRL run.

    Evaluates with :func:`course_lib.evaluate.evaluate` (the function the course's trainers
    use) before training, every ``eval_every`` steps and after the last step, and keeps a
    history with the keys, and meanings, of the course trainer's
    (:data:`course_lib.trainers.metrics.METRICS`): ``eval_step``, ``eval_accuracy``,
    ``eval_samples``, ``eval_wall`` (seconds of training, evaluation excluded),
    ``eval_seconds`` and ``step_seconds`` (each optimizer step, generation included). With
    ``stop_at_accuracy`` training stops at the first evaluation that reaches it. Under
    ``accelerate launch`` every process evaluates its (identical) copy of the model, so
    all processes stop together.
    """

    def __init__(self, task, eval_every: int = 10, split: str = "test",
                 stop_at_accuracy: float | None = None, completions_per_step: int = 128):
        if eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {eval_every}")
        self.task, self.eval_every, self.split = task, eval_every, split
        self.stop_at_accuracy = stop_at_accuracy
        self.completions_per_step = completions_per_step
        self.history: dict[str, list] = defaultdict(list)
        self._t0 = self._last = 0.0
        self._eval_time = 0.0

    def _evaluate(self, step: int, model) -> float:
        t = time.perf_counter()
        acc = evaluate(model, self.task, split=self.split)
        seconds = time.perf_counter() - t
        self.history["eval_step"].append(step)
        self.history["eval_accuracy"].append(acc)
        self.history["eval_samples"].append(step * self.completions_per_step)
        self.history["eval_wall"].append(t - self._t0 - self._eval_time)
        self.history["eval_seconds"].append(seconds)
        self._eval_time += seconds
        return acc

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._t0, self._eval_time = time.perf_counter(), 0.0
        self._evaluate(state.global_step, model)
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.history["step_seconds"].append(time.perf_counter() - self._last)
        step = state.global_step
        if (self.eval_every and step % self.eval_every == 0) or step >= state.max_steps:
            acc = self._evaluate(step, model)
            if self.stop_at_accuracy is not None and acc >= self.stop_at_accuracy:
                control.should_training_stop = True
        self._last = time.perf_counter()
        return control
