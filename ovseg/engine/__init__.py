"""Training engine: loop, checkpoints, optimizer and schedule, logging, distributed helpers."""

from ovseg.checkpoint import (
    CheckpointError,
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    model_state_dict,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from ovseg.config.engine import ClipGradConfig, OptimConfig, RuntimeConfig, ScheduleConfig
from ovseg.engine.logger import TrainLogger
from ovseg.engine.optim import (
    WarmupLRScheduler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    effective_lr,
)
from ovseg.engine.trainer import FINAL_WEIGHTS, Trainer
from ovseg.utils.dist import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    seed_everything,
)

__all__ = [
    "FINAL_WEIGHTS",
    "CheckpointError",
    "ClipGradConfig",
    "DistInfo",
    "OptimConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "TrainLogger",
    "Trainer",
    "WarmupLRScheduler",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "effective_lr",
    "get_rank",
    "get_rng_state",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "latest_checkpoint",
    "load_checkpoint",
    "load_weights",
    "model_state_dict",
    "prune_checkpoints",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]
