"""Iteration-based training loop: AMP, gradient accumulation, DDP, exact resume.

The engine is model-agnostic: in train mode the model maps whatever the data loader yields to a
dict of scalar losses, ``losses = model(batch)``; the total loss is their sum. The model moves
the batch to its own device (as Mask2Former's ``MaskFormer.forward`` does).

How ``ovseg/cli/train.py`` wires it (``cfg`` is the resolved, typed config; abridged)::

    from ovseg.engine import (Trainer, build_lr_scheduler, build_optimizer, effective_lr,
                              init_distributed, load_weights, seed_everything)

    info = init_distributed(cfg.runtime.device)           # torchrun env; no-op alone
    seed_everything(cfg.runtime.seed, info.rank)          # seed + rank
    loader = build_train_loader(cfg.data, seed=cfg.runtime.seed, rank=info.rank,
                                world_size=info.world_size)   # resumable TrainLoader
    model = build_model(cfg.model).to(info.device)
    total_batch = cfg.data.batch_size * info.world_size * cfg.schedule.grad_accum_steps
    lr = effective_lr(cfg.optim.lr, total_batch, cfg.schedule)
    optimizer = build_optimizer(model, cfg.optim, lr=lr)  # trainable params only
    scheduler = build_lr_scheduler(optimizer, cfg.schedule)
    trainer = Trainer(
        model, optimizer, scheduler, loader,
        work_dir=cfg.runtime.work_dir, max_iter=cfg.schedule.max_iter, amp=cfg.runtime.amp,
        grad_accum_steps=cfg.schedule.grad_accum_steps, clip_grad=cfg.optim.clip_grad,
        checkpoint_period=cfg.schedule.checkpoint_period, keep_last=cfg.schedule.keep_last,
        log_period=cfg.schedule.log_period, eval_fn=evaluate, eval_period=cfg.schedule.eval_period,
        config_yaml=config_yaml, tensorboard=cfg.runtime.log_tensorboard,
        model_checkpoint_fn=lambda m: model_checkpoint(m, config_yaml),
    )
    if args.resume:                                       # --resume [PATH]
        trainer.resume(args.resume if isinstance(args.resume, str) else None)
    elif args.load_from:                                  # --load-from CKPT
        load_weights(model, args.load_from)               # weights only, fresh schedule
    trainer.train()                                       # -> WORK_DIR/model_final.pth

Sampler protocol (for exact resume of the data order): the sampler (``sampler=``, else the
loader or ``data_loader.sampler``, whichever is resumable) may have ``state_dict()`` and ``load_state_dict(dict)``. A DataLoader
with workers prefetches, so the sampler runs ahead of the loop; the Trainer therefore tells it
how many samples this rank actually consumed (``iterations * grad_accum_steps * batch_size``):
through ``state_dict(position=n)`` when the method takes that keyword
(:class:`ovseg.data.samplers.TrainingSampler` does), else by overwriting a ``"position"`` key of
the returned dict.

Randomness in the data path must come from the sampler or the main process's RNGs (restored on
resume), or be seeded per sample: DataLoader workers restart their RNG streams when a resumed run
creates a new iterator.
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ovseg.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    check_model_state,
    checkpoint_path,
    get_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_state,
    model_state_dict,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
)
from ovseg.config.diff import config_differences, format_differences, matches_any
from ovseg.config.engine import ClipGradConfig
from ovseg.engine.logger import TrainLogger
from ovseg.engine.optim import clip_gradients
from ovseg.utils import dist, host_memory
from ovseg.utils.precision import DTYPES, warn_if_emulated

__all__ = ["FINAL_WEIGHTS", "Trainer"]

FINAL_WEIGHTS = "model_final.pth"
_AMP_DTYPES = {k: DTYPES[k] for k in ("none", "bf16", "fp16")}  # runtime.amp's names
# Config keys a resume may change: they steer the run (its length, logging, where it runs), not
# the state restored from the checkpoint. Any other difference is refused (issue 18, case 5).
RESUME_SAFE_KEYS = (
    "schedule.max_iter",
    "schedule.log_period",
    "schedule.checkpoint_period",
    "schedule.keep_last",
    "schedule.eval_period",
    "runtime.work_dir",
    "runtime.device",
    "runtime.log_tensorboard",
    "runtime.reuse_host_memory",
    "model.pixel_decoder.activation_checkpointing",  # recomputes, changes no value
    "data.num_workers",
    "data.test",
)


class Trainer:
    """Runs ``max_iter`` optimizer steps of ``model`` on ``data_loader``.

    Args:
        model: the model on its device, in any mode; ``model(batch)`` in train mode returns
            ``dict[str, Tensor]`` of scalar losses. Wrapped in DDP when the process group has
            more than one process (``find_unused_parameters=False``; buffers synced at
            construction only: the frozen CLIP is in eval mode and the trainable head has no
            batch norm).
        optimizer: over the trainable parameters (:func:`ovseg.engine.optim.build_optimizer`).
        scheduler: stepped once per optimizer step (:func:`~ovseg.engine.optim.build_lr_scheduler`).
        data_loader: an iterable of batches that never runs out (an infinite sampler); one
            micro-batch per ``next()``.
        work_dir: checkpoints, ``metrics.jsonl``, TensorBoard events and the final weights.
        max_iter: optimizer steps of the whole run.
        amp: ``"none"``, ``"bf16"`` (autocast) or ``"fp16"`` (autocast + GradScaler).
        grad_accum_steps: micro-batches per optimizer step; each adds ``loss / grad_accum_steps``.
        clip_grad: gradient clipping (None or ``enabled=False``: none).
        checkpoint_period: save ``checkpoint_XXXXXXX.pth`` every this many steps (0 = never).
        keep_last: keep the newest K periodic checkpoints (0 = all).
        log_period: log every this many steps (and at the last).
        eval_fn: ``eval_fn(model) -> dict`` of (nested) metrics, called on every rank with the
            unwrapped model; RNG states are restored afterwards, so evaluating never changes the
            training trajectory.
        eval_period: evaluate every this many steps and at the end (0 = never).
        config_yaml: the resolved config, stored in every checkpoint.
        sampler: what holds the data position (``state_dict``/``load_state_dict``); default
            ``data_loader`` itself when it has both, else ``data_loader.sampler`` when it has.
        batch_size: samples per micro-batch on this rank; default ``data_loader.batch_size``.
        tensorboard: write TensorBoard event files.
        progress: draw a tqdm bar (default: when stderr is a terminal).
        meta: extra primitives for the checkpoints' ``"meta"`` entry.
        model_checkpoint_fn: builds the model-only checkpoint dict (``format``, ``version``,
            ``config``, ``model``, ``meta``) from the unwrapped model, e.g.
            ``lambda m: ovseg.checkpoint.model_checkpoint(m, yaml)``; the Trainer
            adds its training entries and meta. Default: ``model_state_dict(model)`` (the
            model's ``trainable_state_dict()``) with ``config_yaml``.
        resume_safe_keys: dotted config keys (or prefixes) that :meth:`resume` lets differ from
            the checkpoint's config; any other difference is a :class:`CheckpointError`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        data_loader: Iterable[Any],
        *,
        work_dir: str | Path,
        max_iter: int,
        amp: str = "none",
        grad_accum_steps: int = 1,
        clip_grad: ClipGradConfig | None = None,
        checkpoint_period: int = 5000,
        keep_last: int = 3,
        log_period: int = 20,
        eval_fn: Callable[[nn.Module], Mapping[str, Any]] | None = None,
        eval_period: int = 0,
        config_yaml: str = "",
        sampler: Any = None,
        batch_size: int | None = None,
        tensorboard: bool = True,
        progress: bool | None = None,
        meta: Mapping[str, Any] | None = None,
        model_checkpoint_fn: Callable[[nn.Module], Mapping[str, Any]] | None = None,
        resume_safe_keys: Collection[str] = RESUME_SAFE_KEYS,
    ) -> None:
        if amp not in _AMP_DTYPES:
            raise ValueError(f"amp must be 'none', 'bf16' or 'fp16'; got {amp!r}")
        for name, value, minimum in (
            ("max_iter", max_iter, 1),
            ("grad_accum_steps", grad_accum_steps, 1),
            ("log_period", log_period, 1),
            ("checkpoint_period", checkpoint_period, 0),
            ("keep_last", keep_last, 0),
            ("eval_period", eval_period, 0),
        ):
            if int(value) < minimum:
                raise ValueError(f"{name} must be >= {minimum}; got {value}")
        self.model = model.module if isinstance(model, DistributedDataParallel) else model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.data_loader = data_loader
        self.work_dir = Path(work_dir)
        self.max_iter = int(max_iter)
        self.amp = amp
        self.grad_accum_steps = int(grad_accum_steps)
        self.clip_grad = clip_grad
        self.checkpoint_period = int(checkpoint_period)
        self.keep_last = int(keep_last)
        self.log_period = int(log_period)
        self.eval_fn = eval_fn
        self.eval_period = int(eval_period)
        self.config_yaml = config_yaml
        self.tensorboard = tensorboard
        self.progress = progress
        self.meta = dict(meta or {})
        self.model_checkpoint_fn = model_checkpoint_fn
        self.resume_safe_keys = tuple(resume_safe_keys)

        first = next(iter(self.model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        warn_if_emulated(self.device, amp, "runtime.amp")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        if self.world_size > 1 and not isinstance(model, DistributedDataParallel):
            # Buffers are synced once at construction, not at every forward (detectron2 and
            # FC-CLIP do the same): the frozen CLIP's buffers never change. torch >= 2.14 calls
            # the option forward_sync_buffers and deprecates broadcast_buffers.
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
                buffers = {"forward_sync_buffers": False}
            else:
                buffers = {"broadcast_buffers": False}
            model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
                **buffers,
            )
        self.train_model = model
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")

        if sampler is None:
            # The loader itself when it is resumable (ovseg.data.build.TrainLoader), else its
            # sampler when that is.
            for candidate in (data_loader, getattr(data_loader, "sampler", None)):
                if callable(getattr(candidate, "state_dict", None)) and callable(
                    getattr(candidate, "load_state_dict", None)
                ):
                    sampler = candidate
                    break
        self.sampler = sampler
        if batch_size is None:
            batch_size = getattr(data_loader, "batch_size", None)
            if batch_size is None:
                batch_size = getattr(
                    getattr(data_loader, "batch_sampler", None), "batch_size", None
                )
        self.batch_size = int(batch_size) if batch_size is not None else None

        self.iteration = 0
        self._pending_rng: dict[str, Any] | None = None
        self._params = [p for g in optimizer.param_groups for p in g["params"]]

    # ------------------------------------------------------------------ checkpoints

    def _samples_consumed(self) -> int | None:
        if self.batch_size is None:
            return None
        return self.iteration * self.grad_accum_steps * self.batch_size

    def _sampler_state(self) -> dict[str, Any] | None:
        if self.sampler is None or not callable(getattr(self.sampler, "state_dict", None)):
            return None
        consumed = self._samples_consumed()
        try:
            accepts_position = "position" in inspect.signature(self.sampler.state_dict).parameters
        except (TypeError, ValueError):
            accepts_position = False
        if accepts_position and consumed is not None:
            return dict(self.sampler.state_dict(position=consumed))
        state = dict(self.sampler.state_dict())
        if "position" in state:
            if consumed is None:
                raise ValueError(
                    "the sampler reports a 'position' but the Trainer does not know the batch "
                    "size; pass batch_size= to Trainer"
                )
            state["position"] = consumed
        return state

    def _base_state(self) -> dict[str, Any]:
        meta = {
            "torch": str(torch.__version__),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "grad_accum_steps": self.grad_accum_steps,
            "amp": self.amp,
            "iteration": self.iteration,
        }
        meta.update(self.meta)
        if self.model_checkpoint_fn is not None:
            state = dict(self.model_checkpoint_fn(self.model))
            for key in ("format", "version", "model"):
                if key not in state:
                    raise KeyError(f"model_checkpoint_fn returned no {key!r} entry")
            state.setdefault("config", self.config_yaml)
            state["meta"] = {**dict(state.get("meta") or {}), **meta}
            return state
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": self.config_yaml,
            "model": model_state_dict(self.model),
            "meta": meta,
        }

    def save_checkpoint(self) -> Path:
        """Save a resumable checkpoint of the current iteration (collective: call on all ranks).

        Every rank's RNG and sampler state is gathered; rank 0 writes the file atomically and
        prunes old ones.
        """
        rng = dist.all_gather_object(get_rng_state())
        samplers = dist.all_gather_object(self._sampler_state())
        path = checkpoint_path(self.work_dir, self.iteration)
        if dist.is_main_process():
            state = self._base_state()
            state.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                rng={"world_size": self.world_size, "ranks": rng},
                iteration=self.iteration,
                sampler={
                    "world_size": self.world_size,
                    "samples_per_rank": self._samples_consumed(),
                    "ranks": samplers if samplers[0] is not None else [],
                },
            )
            save_checkpoint(path, state)
            prune_checkpoints(self.work_dir, self.keep_last)
        dist.barrier()
        return path

    def save_final(self) -> Path:
        """Write the model-only ``WORK_DIR/model_final.pth`` (rank 0; collective barrier)."""
        path = self.work_dir / FINAL_WEIGHTS
        if dist.is_main_process():
            save_checkpoint(path, self._base_state())
        dist.barrier()
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore everything from a checkpoint to continue the same trajectory.

        Args:
            path: a checkpoint file; default the newest ``checkpoint_*.pth`` in ``work_dir``.

        Returns:
            False when ``path`` is None and ``work_dir`` has no checkpoint (training starts
            from scratch), else True.

        Raises:
            CheckpointError: the file is unreadable, not resumable or does not fit the model or
                optimizer (the message names the key); nothing has been modified then.
        """
        if path is None:
            found = dist.broadcast_object([p for _, p in list_checkpoints(self.work_dir)])
            if not found:
                warnings.warn(
                    f"resume: no checkpoint_*.pth in {self.work_dir}; training from scratch",
                    stacklevel=2,
                )
                return False
            path, ckpt = self._newest_readable(found)
        else:
            path = Path(path)
            ckpt = load_checkpoint(path)
        self._check_resumable(ckpt, path)
        self._check_config(str(ckpt.get("config") or ""), path)

        load_model_state(self.model, ckpt["model"], source=str(path), strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        scaler_state = ckpt.get("scaler") or {}
        if self.scaler.is_enabled() and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        self.iteration = int(ckpt["iteration"])

        saved_world = int(ckpt["rng"].get("world_size", 1))
        ranks = ckpt["rng"].get("ranks", [])
        if saved_world == self.world_size and len(ranks) == self.world_size:
            self._pending_rng = ranks[self.rank]
        else:
            warnings.warn(
                f"resume: {path} was written by {saved_world} process(es), this run has "
                f"{self.world_size}; RNG streams are not restored and the trajectory will differ "
                "from an uninterrupted run",
                stacklevel=2,
            )
        self._load_sampler(ckpt.get("sampler") or {}, path)
        return True

    def _check_config(self, saved: str, path: Path) -> None:
        """Apply changed run-control keys (:data:`RESUME_SAFE_KEYS`, logged); refuse any other
        difference, listed, since the restored model, optimizer and scheduler state would keep
        following the stored values while the work dir records the new ones."""
        if not saved or not self.config_yaml or saved == self.config_yaml:
            return
        diffs = config_differences(saved, self.config_yaml)
        unsafe = [d for d in diffs if not matches_any(d[0], self.resume_safe_keys)]
        if unsafe:
            raise CheckpointError(
                f"resume: {path} was trained with another config: {format_differences(unsafe)}. "
                "The restored optimizer and scheduler state would keep the stored values: set "
                "these back to resume, or start a new work dir with --load-from "
                f"{path} to train on with the new ones"
            )
        if diffs:
            warnings.warn(
                f"resume: the config differs from the one stored in {path}; applying "
                f"{format_differences(diffs)}",
                stacklevel=3,
            )

    @staticmethod
    def _newest_readable(paths: list[Path]) -> tuple[Path, dict[str, Any]]:
        """The newest of ``paths`` (oldest first) that loads; each unreadable one is skipped
        with a warning naming it (a 0-byte or truncated file left by a crash).

        Raises:
            CheckpointError: none of them is readable (the message names each).
        """
        bad = []
        for path in reversed(paths):
            try:
                return path, load_checkpoint(path)
            except CheckpointError as e:
                bad.append(str(e))
                warnings.warn(
                    f"resume: skipping unreadable {path} ({e}); trying an older checkpoint",
                    stacklevel=3,
                )
        raise CheckpointError("resume: no readable checkpoint: " + "; ".join(bad))

    def _check_resumable(self, ckpt: Mapping[str, Any], path: Path) -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not an ovseg checkpoint (no format: 'ovseg')")
        missing = [
            k for k in ("model", "optimizer", "scheduler", "iteration", "rng") if k not in ckpt
        ]
        if missing:
            raise CheckpointError(
                f"{path} is not resumable: it has no {missing[0]!r} entry (weights-only files "
                "such as model_final.pth start a new run with --load-from instead)"
            )
        check_model_state(self.model, ckpt["model"], source=str(path), strict=True)
        saved_groups = ckpt["optimizer"].get("param_groups", [])
        groups = self.optimizer.param_groups
        if len(saved_groups) != len(groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved_groups, groups)
        ):
            raise CheckpointError(
                f"{path} does not fit this optimizer: parameter groups of sizes "
                f"{[len(s['params']) for s in saved_groups]} in the checkpoint, "
                f"{[len(g['params']) for g in groups]} here (different trainable parameters or "
                "optimizer config)"
            )
        saved_state = ckpt["optimizer"].get("state", {})
        index = 0
        for s, g in zip(saved_groups, groups):
            for saved_id, p in zip(s["params"], g["params"]):
                for key, value in saved_state.get(saved_id, {}).items():
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape != p.shape:
                        raise CheckpointError(
                            f"{path} does not fit this optimizer: state {key!r} of parameter "
                            f"#{index} has shape {tuple(value.shape)}, the parameter "
                            f"{tuple(p.shape)}"
                        )
                index += 1

    def _load_sampler(self, saved: Mapping[str, Any], path: Path) -> None:
        states = list(saved.get("ranks", []))
        if self.sampler is None or not callable(getattr(self.sampler, "load_state_dict", None)):
            warnings.warn(
                "resume: the data loader has no resumable sampler (state_dict/load_state_dict); "
                "the data order restarts, so the run will differ from an uninterrupted one",
                stacklevel=3,
            )
            return
        if not states:
            warnings.warn(
                f"resume: {path} holds no sampler state; the data order restarts", stacklevel=3
            )
            return
        state = dict(states[self.rank % len(states)])
        saved_world = int(saved.get("world_size", 1))
        if (
            saved_world != self.world_size
            and "position" in state
            and "global_position" not in state
        ):
            # Keep the number of samples seen by the whole job when the world size changes.
            per_rank = int(saved.get("samples_per_rank") or state["position"])
            state["position"] = per_rank * saved_world // self.world_size
        self.sampler.load_state_dict(state)

    # ------------------------------------------------------------------ loop

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = _AMP_DTYPES[self.amp]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _forward(self, batch: Any) -> dict[str, torch.Tensor]:
        with self._autocast():
            losses = self.train_model(batch)
        if (
            not isinstance(losses, Mapping)
            or not losses
            or not all(torch.is_tensor(v) and v.numel() == 1 for v in losses.values())
        ):
            raise TypeError(
                "the model's training forward must return a non-empty dict[str, Tensor] of "
                f"scalar losses; got {type(losses).__name__}"
            )
        return dict(losses)

    def _evaluate(self, logger: TrainLogger) -> dict[str, Any]:
        assert self.eval_fn is not None
        rng = get_rng_state()
        try:
            results = dict(self.eval_fn(self.model) or {})
        finally:
            self.train_model.train()
            set_rng_state(rng)
        logger.log_eval(self.iteration, results)
        return results

    def train(self) -> dict[str, Any]:
        """Train from ``self.iteration`` to ``max_iter``, then write ``model_final.pth``.

        Returns:
            ``{"iteration": int, "final_weights": str, "losses": {name: float}, "eval": dict}``
            with the last logged losses and the last evaluation results.

        Raises:
            FloatingPointError: a loss was NaN/inf; no optimizer step and no checkpoint is made
                for that iteration, so the last periodic checkpoint is the last good state.
        """
        start = self.iteration
        logger = TrainLogger(
            self.work_dir,
            max_iter=self.max_iter,
            start_iter=start,
            enabled=dist.is_main_process(),
            tensorboard=self.tensorboard,
            progress=self.progress,
        )
        last_losses: dict[str, float] = {}
        last_eval: dict[str, Any] = {}
        try:
            if start >= self.max_iter:
                logger.info(f"iteration {start} >= max_iter {self.max_iter}: nothing to train")
            else:
                # Create the iterator first: DataLoader draws its base seed from the global torch
                # RNG here, which the restored state must not see.
                data_iter = iter(self.data_loader)
                if self._pending_rng is not None:
                    set_rng_state(self._pending_rng)
                    self._pending_rng = None
                self.train_model.train()
                last_losses, last_eval = self._loop(data_iter, logger)
            final = self.save_final()
        finally:
            logger.close()
        return {
            "iteration": self.iteration,
            "final_weights": str(final),
            "losses": last_losses,
            "eval": last_eval,
        }

    def _loop(self, data_iter: Any, logger: TrainLogger) -> tuple[dict[str, float], dict[str, Any]]:
        window: dict[str, torch.Tensor] = {}
        window_n = 0
        data_time = 0.0
        last_losses: dict[str, float] = {}
        last_eval: dict[str, Any] = {}
        accum = self.grad_accum_steps
        ddp = isinstance(self.train_model, DistributedDataParallel)
        grad_norm: torch.Tensor | None = None
        while self.iteration < self.max_iter:
            step = self.iteration + 1  # 1-based number of the iteration being run
            self.optimizer.zero_grad(set_to_none=True)
            finite = torch.ones((), dtype=torch.bool, device=self.device)
            micro_losses: list[dict[str, torch.Tensor]] = []
            for micro in range(accum):
                t0 = time.perf_counter()
                batch = next(data_iter)
                data_time += time.perf_counter() - t0
                sync = ddp and micro < accum - 1
                with self.train_model.no_sync() if sync else contextlib.nullcontext():
                    losses = self._forward(batch)
                    total = sum(losses.values())
                    # One host sync per iteration (below), not per micro-batch.
                    finite &= torch.isfinite(total.detach())
                    self.scaler.scale(total / accum).backward()
                detached = {k: v.detach().float() for k, v in losses.items()}
                micro_losses.append(detached)
                for k, v in detached.items():
                    window[k] = window[k] + v / accum if k in window else v / accum
            if dist.all_reduce_max(0.0 if bool(finite) else 1.0) > 0:
                self._raise_nonfinite(step, micro_losses, logger)
            lr = float(self.optimizer.param_groups[0]["lr"])  # the lr this step uses
            if self.clip_grad is not None and self.clip_grad.enabled:
                self.scaler.unscale_(self.optimizer)
                grad_norm = clip_gradients(self._params, self.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            with warnings.catch_warnings():
                # GradScaler skips steps with inf/NaN gradients; the schedule still advances.
                warnings.filterwarnings(
                    "ignore", "Detected call of `lr_scheduler.step", UserWarning
                )
                self.scheduler.step()
            self.iteration = step
            window_n += 1
            logger.step()
            if step % host_memory.RELEASE_PERIOD == 0:
                host_memory.release_freed_host_memory()  # bounds heap fragmentation; see there

            if step % self.log_period == 0 or step == self.max_iter:
                means = dist.all_reduce_mean({k: v / window_n for k, v in window.items()})
                extra: dict[str, float] = {}
                if grad_norm is not None:
                    extra["grad_norm"] = float(grad_norm)
                if self.scaler.is_enabled():
                    extra["loss_scale"] = float(self.scaler.get_scale())
                logger.log(
                    step,
                    means,
                    lr=lr,
                    device=self.device,
                    data_time=data_time / window_n,
                    extra=extra,
                )
                last_losses = means
                window, window_n, data_time = {}, 0, 0.0
            if self.checkpoint_period and step % self.checkpoint_period == 0:
                self.save_checkpoint()
            if (
                self.eval_fn is not None
                and self.eval_period
                and (step % self.eval_period == 0 or step == self.max_iter)
            ):
                last_eval = self._evaluate(logger)
        return last_losses, last_eval

    def _raise_nonfinite(
        self, step: int, micro_losses: list[dict[str, torch.Tensor]], logger: TrainLogger
    ) -> None:
        terms: dict[str, float] = {}
        for losses in micro_losses:
            if not torch.isfinite(sum(losses.values())):
                terms = {k: float(v) for k, v in losses.items()}
                break
        last = latest_checkpoint(self.work_dir)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        detail = (
            ", ".join(f"{k}={v:.6g}" for k, v in terms.items()) if terms else ("on another rank")
        )
        msg = (
            f"non-finite loss at iteration {step}: {detail}; training stopped before the "
            f"optimizer step, {where}. Lower the lr, enable gradient clipping or AMP bf16, or "
            "check the data of this iteration."
        )
        logger.info(msg)
        raise FloatingPointError(msg)
