"""Typed config sections of the training engine: ``optim``, ``schedule`` and ``runtime``.

Plain dataclasses with defaults, usable as OmegaConf structured configs (the top-level schema
composes them) or directly from Python. Values whose type cannot express the allowed set
(``policy``, ``amp``, ...) are checked in ``__post_init__``, which OmegaConf's ``to_object`` runs,
so a bad value fails at load time with the key and the allowed values.

Learning-rate scaling rule (documented here, applied by :func:`ovseg.engine.optim.effective_lr`):
``optim.lr`` is the learning rate for ``schedule.reference_batch_size`` images per optimizer step.
With ``schedule.scale_lr: true`` the engine uses

    lr_effective = optim.lr * total_batch / schedule.reference_batch_size,
    total_batch  = batch per process * world size * schedule.grad_accum_steps,

the linear scaling rule of Goyal et al. 2017 ("Accurate, Large Minibatch SGD"), so that changing
the number of GPUs keeps the recipe's lr-per-image. With ``scale_lr: false`` (default) ``optim.lr``
is used as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ClipGradConfig", "OptimConfig", "RuntimeConfig", "ScheduleConfig"]


def _check_choice(section: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{section}.{key} must be one of {allowed}; got {value!r}")


def _check_min(section: str, key: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ValueError(f"{section}.{key} must be >= {minimum}; got {value!r}")


@dataclass
class ClipGradConfig:
    """Gradient clipping (Mask2Former's ``SOLVER.CLIP_GRADIENTS``).

    Attributes:
        enabled: clip at all.
        type: ``"full_model"`` clips the global norm over all trainable parameters together
            (Mask2Former/FC-CLIP); ``"norm"`` clips each parameter's norm separately and
            ``"value"`` clamps every gradient element to [-value, value] (detectron2).
        value: the maximum norm (or absolute value for ``"value"``).
        norm_type: p of the p-norm.
    """

    enabled: bool = True
    type: str = "full_model"
    value: float = 0.01
    norm_type: float = 2.0

    def __post_init__(self) -> None:
        _check_choice("optim.clip_grad", "type", self.type, ("full_model", "norm", "value"))
        _check_min("optim.clip_grad", "value", self.value, 0.0)


@dataclass
class OptimConfig:
    """Optimizer (AdamW over trainable parameters only; frozen CLIP is never in it).

    Attributes:
        name: only ``"adamw"`` (FC-CLIP) and ``"sgd"`` (tests, baselines).
        lr: base learning rate for ``schedule.reference_batch_size`` images per step.
        weight_decay: decoupled weight decay of ordinary weights.
        weight_decay_norm: weight decay of normalisation layers' parameters (Mask2Former: 0).
        weight_decay_embed: weight decay of ``nn.Embedding`` weights, e.g. the queries (0).
        betas: AdamW betas.
        eps: AdamW epsilon.
        momentum: SGD momentum.
        backbone_multiplier: lr multiplier for trainable parameters whose module path contains
            ``"backbone"`` (Mask2Former). FC-CLIP's backbone is frozen, so it has no effect there;
            kept so that Mask2Former/FC-CLIP configs carry over unchanged.
        clip_grad: gradient clipping.
    """

    name: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    momentum: float = 0.9
    backbone_multiplier: float = 0.1
    clip_grad: ClipGradConfig = field(default_factory=ClipGradConfig)

    def __post_init__(self) -> None:
        _check_choice("optim", "name", self.name, ("adamw", "sgd"))
        _check_min("optim", "lr", self.lr, 0.0)
        _check_min("optim", "weight_decay", self.weight_decay, 0.0)
        if len(self.betas) != 2:
            raise ValueError(f"optim.betas must hold two numbers; got {list(self.betas)!r}")


@dataclass
class ScheduleConfig:
    """Iteration-based schedule, checkpointing, logging and evaluation periods.

    Attributes:
        max_iter: optimizer steps of the whole run.
        policy: ``"multistep"`` (lr x gamma at each of ``steps``) or ``"poly"``
            (lr x (1 - it / max_iter) ** power).
        steps: iterations at which the multistep policy decays the lr, ascending.
        gamma: multistep decay factor.
        power: poly exponent.
        warmup_iters: iterations of warm-up (0 = none).
        warmup_factor: lr multiplier at iteration 0 of the warm-up.
        warmup_method: ``"linear"`` ramp from ``warmup_factor`` to 1, or ``"constant"``.
        checkpoint_period: save a resumable checkpoint every this many iterations (0 = never).
        keep_last: keep only the newest K periodic checkpoints (0 = keep all).
        eval_period: evaluate every this many iterations and at the end (0 = off).
        log_period: console / metrics.jsonl / TensorBoard period in iterations.
        grad_accum_steps: micro-batches accumulated per optimizer step.
        scale_lr: apply the linear scaling rule of the module docstring.
        reference_batch_size: total batch for which ``optim.lr`` is specified (FC-CLIP: 16).
    """

    max_iter: int = 90000
    policy: str = "multistep"
    steps: list[int] = field(default_factory=list)
    gamma: float = 0.1
    power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    warmup_method: str = "linear"
    checkpoint_period: int = 5000
    keep_last: int = 3
    eval_period: int = 0
    log_period: int = 20
    grad_accum_steps: int = 1
    scale_lr: bool = False
    reference_batch_size: int = 16

    def __post_init__(self) -> None:
        _check_choice("schedule", "policy", self.policy, ("multistep", "poly"))
        _check_choice("schedule", "warmup_method", self.warmup_method, ("linear", "constant"))
        _check_min("schedule", "max_iter", self.max_iter, 1)
        for key in ("warmup_iters", "checkpoint_period", "keep_last", "eval_period"):
            _check_min("schedule", key, getattr(self, key), 0)
        for key in ("log_period", "grad_accum_steps", "reference_batch_size"):
            _check_min("schedule", key, getattr(self, key), 1)
        steps = list(self.steps)
        if steps != sorted(steps):
            raise ValueError(f"schedule.steps must be ascending; got {steps}")


@dataclass
class RuntimeConfig:
    """Process-level settings.

    Attributes:
        seed: base seed; rank r is seeded with ``seed + r``.
        amp: ``"none"`` (fp32), ``"bf16"`` or ``"fp16"`` (with a gradient scaler).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        work_dir: checkpoints, logs, metrics.jsonl and the resolved config go here.
        deterministic: ``torch.use_deterministic_algorithms(True)`` (slower on GPU).
        cudnn_benchmark: let cuDNN pick the fastest kernels (non-deterministic).
        log_tensorboard: write TensorBoard event files to ``work_dir``.
        reuse_host_memory: on CPU, let glibc's malloc keep freed memory for reuse, so that a step's
            large activations are not page-faulted in afresh every step
            (:func:`ovseg.utils.host_memory.reuse_freed_host_memory`; ~20% of an fp32 CPU step
            of FC-CLIP ConvNeXt-L at 1024x1024). The process then keeps its peak memory.
    """

    seed: int = 42
    amp: str = "none"
    device: str = "auto"
    work_dir: str = "work_dirs/default"
    deterministic: bool = False
    cudnn_benchmark: bool = False
    log_tensorboard: bool = True
    reuse_host_memory: bool = True

    def __post_init__(self) -> None:
        _check_choice("runtime", "amp", self.amp, ("none", "bf16", "fp16"))
        _check_choice("runtime", "device", self.device, ("auto", "cpu", "cuda"))
