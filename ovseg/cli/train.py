"""Train an ovseg model from a config: ``python tools/train.py CONFIG [--work-dir DIR] ...``.

A thin wrapper: the config builds the model (``ovseg.models``), the data loader (``ovseg.data``)
and the engine (``ovseg.engine``); everything here is also a Python API.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EPILOG = """examples:
  # FC-CLIP on COCO panoptic (8 GPUs, 2 images each = FC-CLIP's batch 16)
  torchrun --nproc-per-node 8 tools/train.py fcclip/fcclip_convnext_large_coco_panoptic.yaml \\
      --work-dir work_dirs/fcclip_convnext_large
  # your own data in COCO-panoptic format, on one machine
  python tools/train.py fcclip/fcclip_convnext_large_coco_panoptic.yaml --work-dir work_dirs/mine \\
      data.train.image_root=mydata/images data.train.panoptic_json=mydata/panoptic.json \\
      data.train.panoptic_root=mydata/panoptic
  # continue an interrupted run exactly where it stopped
  python tools/train.py CONFIG --work-dir work_dirs/mine --resume
  # fine-tune from official FC-CLIP weights (weights only, fresh schedule)
  python tools/train.py CONFIG --load-from fcclip_cocopan.pth
  # several nodes
  torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-endpoint HOST:29500 tools/train.py CONFIG
"""

logger = logging.getLogger("ovseg.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML config")
    p.add_argument("--work-dir", help="output folder (default: runtime.work_dir)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        help="continue from the newest checkpoint in the work dir (or the given one)",
    )
    p.add_argument("--load-from", help="initial weights only (ovseg or FC-CLIP checkpoint)")
    p.add_argument("--amp", choices=("none", "fp16", "bf16"), help="overrides runtime.amp")
    p.add_argument("--seed", type=int, help="overrides runtime.seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="overrides runtime.device")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return p


def environment_summary() -> dict:
    import open_clip
    import timm
    import torch

    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "open_clip": open_clip.__version__,
        "timm": timm.__version__,
        "git": git,
        "threads": torch.get_num_threads(),
    }


def train(args: argparse.Namespace) -> dict:
    """Resolve the config, take the work dir's lock (rank 0) and run :func:`_train`."""
    from ovseg.config import load_config
    from ovseg.engine import init_distributed, seed_everything
    from ovseg.engine.workdir import WorkDirLock
    from ovseg.utils import dist

    overrides = list(args.overrides)
    for flag, key in (
        (args.work_dir, "runtime.work_dir"),
        (args.amp, "runtime.amp"),
        (args.seed, "runtime.seed"),
        (args.device, "runtime.device"),
    ):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    cfg = load_config(args.config, overrides)
    info = init_distributed(cfg.runtime.device)
    seed_everything(cfg.runtime.seed, info.rank)
    import torch

    torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    if cfg.runtime.deterministic:
        # warn_only: an op without a deterministic kernel warns (naming itself), the run goes on.
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.runtime.reuse_host_memory and info.device.type == "cpu":
        from ovseg.utils.host_memory import reuse_freed_host_memory

        reuse_freed_host_memory()
    if info.device.type == "cpu":
        from ovseg.utils.host_memory import host_allocator, reusing_freed_host_memory

        logger.info(
            "host malloc: %s (freed-memory reuse %s)",
            host_allocator(),
            "on" if reusing_freed_host_memory() else "off",
        )
    work_dir = Path(cfg.runtime.work_dir)
    with contextlib.ExitStack() as stack:
        if dist.is_main_process():
            stack.enter_context(WorkDirLock(work_dir))
        return _train(args, cfg, info, work_dir)


def _train(args: argparse.Namespace, cfg: Any, info: Any, work_dir: Path) -> dict:
    """The run itself, inside the work dir's lock."""
    from ovseg.checkpoint import model_checkpoint
    from ovseg.config import to_yaml
    from ovseg.data import build_dataset, build_train_loader
    from ovseg.engine import Trainer, build_lr_scheduler, build_optimizer, effective_lr
    from ovseg.inference.segmenter import Segmenter
    from ovseg.models.builder import build_model
    from ovseg.utils import dist
    from ovseg.utils.io import atomic_write_json, atomic_write_text

    # Data first: a bad dataset path fails before any model is built.
    train_set = build_dataset(cfg.data.train, train=True, aug=cfg.data.aug)
    loader = build_train_loader(
        cfg.data,
        seed=cfg.runtime.seed,
        rank=info.rank,
        world_size=info.world_size,
        dataset=train_set,
    )
    model = build_model(cfg.model, train_vocabulary=train_set.vocabulary).to(info.device)
    config_yaml = to_yaml(cfg)
    if args.load_from and not args.resume:
        seg = Segmenter(model, cfg, info.device)
        seg.load_weights(args.load_from)

    total_batch = cfg.data.batch_size * info.world_size * cfg.schedule.grad_accum_steps
    lr = effective_lr(cfg.optim.lr, total_batch, cfg.schedule)
    optimizer = build_optimizer(model, cfg.optim, lr=lr)
    scheduler = build_lr_scheduler(optimizer, cfg.schedule)

    eval_fn = None
    if cfg.schedule.eval_period > 0:
        from ovseg.evaluation.runner import evaluate, summarize

        test_set = build_dataset(cfg.data.test, train=False)

        def eval_fn(m):
            m.eval()
            return summarize(evaluate(Segmenter(m, cfg, info.device), test_set, progress=False))

    trainer = Trainer(
        model,
        optimizer,
        scheduler,
        loader,
        work_dir=work_dir,
        max_iter=cfg.schedule.max_iter,
        amp=cfg.runtime.amp,
        grad_accum_steps=cfg.schedule.grad_accum_steps,
        clip_grad=cfg.optim.clip_grad,
        checkpoint_period=cfg.schedule.checkpoint_period,
        keep_last=cfg.schedule.keep_last,
        log_period=cfg.schedule.log_period,
        eval_fn=eval_fn,
        eval_period=cfg.schedule.eval_period,
        config_yaml=config_yaml,
        tensorboard=cfg.runtime.log_tensorboard,
        progress=False if args.no_progress else None,
        meta={"lr_effective": lr, "total_batch": total_batch},
        model_checkpoint_fn=lambda m: model_checkpoint(m, config_yaml),
    )
    if args.resume:
        trainer.resume(args.resume if isinstance(args.resume, str) else None)
    # Recorded only now: a resume refused above leaves the work dir's config as it was.
    if dist.is_main_process():
        atomic_write_text(work_dir / "config.yaml", config_yaml)
        atomic_write_json(work_dir / "env.json", environment_summary())
    return trainer.train()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ovseg").setLevel(logging.INFO)
    # Warnings (a resume with nothing to resume, a config change applied) as one line each.
    warnings.formatwarning = lambda message, *_a, **_k: f"warning: {message}\n"
    args = build_parser().parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not os.path.exists(args.resume):
        # `--resume key=value`: the override is not a checkpoint path.
        args.overrides.append(args.resume)
        args.resume = True
    from ovseg.checkpoint import CheckpointError
    from ovseg.config import ConfigError
    from ovseg.data import DatasetError
    from ovseg.engine.workdir import WorkDirBusyError
    from ovseg.utils.env import EnvError

    try:
        result = train(args)
    except (
        ConfigError,
        DatasetError,
        CheckpointError,
        WorkDirBusyError,
        EnvError,
        FileNotFoundError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: v for k, v in result.items() if k != "eval"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
