"""Measure where inference (and a training step) spends its time, memory and parameters.

Random weights are fine: speed does not depend on values. Reports medians and spreads over
``--repeats`` runs after a warm-up, the per-stage split, and ratios to the frozen CLIP image
tower (the floor every FC-CLIP-style model pays).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

EPILOG = """examples:
  # the FC-CLIP ConvNeXt-L architecture at the ADE20K test size, ADE-150 vocabulary, panoptic
  python tools/benchmark.py fcclip/fcclip_convnext_large_eval_ade20k.yaml \\
      --size 512x683 --vocab ade20k-150 --task panoptic --repeats 3 --out bench.json
  # the tiny CI model, with a training step
  python tools/benchmark.py tests/fcclip_tiny.yaml --repeats 2 --train
  # batched inference: images/s at batch 1, 2 and 4
  python tools/benchmark.py fcclip/fcclip_convnext_large_eval_ade20k.yaml --skip-text \
      --batch-sizes 1,2,4 --repeats 2
  # ONNX Runtime against PyTorch on the same input (exports to a temporary folder first)
  python tools/benchmark.py fcclip/fcclip_convnext_large_eval_ade20k.yaml --onnx --skip-text
"""

STAGES = (
    "preprocess",
    "backbone",
    "pixel_decoder",
    "transformer_decoder",
    "classifiers",
    "postprocess",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config")
    p.add_argument("--weights", help="checkpoint (default: random weights; CLIP random too)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--size", default="512x683", help="input image HxW before the test resize")
    p.add_argument(
        "--vocab", default="ade20k-150", help="built-in vocabulary name or a class count N"
    )
    p.add_argument(
        "--task", default="panoptic", choices=("semantic", "instance", "panoptic", "all")
    )
    p.add_argument("--batch", type=int, default=1, help="images per training step (--train)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--train", action="store_true", help="also time a training step")
    p.add_argument("--train-crop", type=int, default=1024, help="training crop size (--train)")
    p.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "none", "bf16", "fp16"),
        help="autocast for the training step (auto: fp16 on CUDA; bf16 on a CPU with bf16 "
        "instructions, else none)",
    )
    p.add_argument(
        "--batch-sizes",
        default="",
        help="also time batched inference (Segmenter.predict_batch) at these batch sizes, "
        "comma-separated, e.g. 1,2,4: images/s and the per-image cost relative to batch 1",
    )
    p.add_argument("--skip-text", action="store_true", help="do not time cold text encoding")
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also export the model to ONNX (the padded size of this input) and time ONNX "
        "Runtime against PyTorch on the same input, paired runs (needs the [export] extra)",
    )
    p.add_argument("--out", help="write the results as JSON")
    p.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    return p


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory above the level at entry (``peak``) and in all (``peak_total``, the model's
    weights included): CUDA max allocated, or the RSS high-water mark on Linux."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            self.ok = _reset_peak()
            self.base = _rss_mb()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_total = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_total = _peak_rss_mb() if self.ok else float("nan")
        self.peak = self.peak_total - self.base


def _stats(values: Sequence[float]) -> dict:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _vocabulary(spec: str):
    from ovseg.text.vocabulary import Vocabulary

    if spec.isdigit():
        return Vocabulary([f"class number {i}" for i in range(int(spec))], name=f"synthetic-{spec}")
    return Vocabulary.from_name(spec)


def run(args: argparse.Namespace) -> dict:
    from ovseg import Segmenter
    from ovseg.utils import precision
    from ovseg.utils.host_memory import release_freed_host_memory, reusing_freed_host_memory
    from ovseg.utils.timing import StageTimer

    if args.batch_sizes:
        parse_batch_sizes(args.batch_sizes)  # a bad value fails before the model is built
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = list(args.overrides) + ["model.text.disk_cache=false"]
    if not args.weights:
        overrides.append("model.backbone.pretrained=null")
    torch.manual_seed(0)  # the same random weights every run: as many queries survive
    t0 = time.perf_counter()
    seg = Segmenter.from_config(
        args.config, weights=args.weights, overrides=overrides, device=device
    )
    build_s = time.perf_counter() - t0
    model = seg.model
    h, w = (int(v) for v in args.size.lower().split("x"))
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    vocab = _vocabulary(args.vocab)

    result: dict = {
        "config": args.config,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "precision": seg.precision,
        # Inference runs as the tools run it: reuse off (ovseg.utils.host_memory), unless
        # the process turned it on; the training step turns it on, as ovseg-train does.
        "reuse_host_memory": reusing_freed_host_memory(),
        "native": {
            k: precision.native(device, dt)
            for k, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16))
        },
        "image_size": [h, w],
        "vocabulary": args.vocab,
        "num_classes": len(vocab),
        "num_prompts": sum(vocab.num_synonyms) * len(model.text_encoder.templates),
        "task": args.task,
        "build_seconds": build_s,
        "weights": args.weights,
    }
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result["params"] = {"total": n_total, "trainable": n_train, "frozen": n_total - n_train}

    if not args.skip_text:
        t0 = time.perf_counter()
        seg.encode_vocabulary(vocab)
        result["text_encoding_cold_seconds"] = time.perf_counter() - t0

    # The frozen image tower alone on the same padded input: the floor every run pays.
    from ovseg.utils.image import resize_shortest_edge

    t = seg.config.model.test
    chw = torch.from_numpy(resize_shortest_edge(image, t.min_size, t.max_size).copy()).permute(
        2, 0, 1
    )
    x = model.normalize_and_pad([chw])

    def tower_once() -> float:
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.backbone(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

    # Whole inference and its split; each run is paired with a tower-alone run right before it,
    # so the ratio is taken under the same machine load (medians of per-pair ratios).
    for _ in range(args.warmup):
        seg.predict(image, vocab, task=args.task)
        tower_once()
    totals, tower, ratios, text_share = [], [], [], []
    stages = list(STAGES)
    if getattr(model, "context_decoder", None) is not None:  # DenseCLIP's per-image refinement
        stages.insert(stages.index("backbone") + 1, "context_decoder")
    splits = {k: [] for k in (*stages, "text")}
    release_freed_host_memory()  # each peak from a trimmed heap (where reuse holds pages)
    with PeakMemory(device) as mem:
        for _ in range(args.repeats):
            tower.append(tower_once())
            timer = StageTimer(device=device)
            t0 = time.perf_counter()
            pred = seg.predict(image, vocab, task=args.task, timer=timer)
            if device.type == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - t0
            totals.append(total)
            ratios.append(total / tower[-1])
            for k in splits:
                splits[k].append(timer.times.get(k, 0.0))
            text_share.append(timer.times.get("text", 0.0) / total)
    release_freed_host_memory()
    with PeakMemory(device) as tower_mem:
        tower_once()
    input_size = pred.extras["input_size"]
    kept = {
        "panoptic": len(pred.segments_info or []),
        "instance": len(pred.instances) if pred.instances is not None else 0,
    }

    med = statistics.median(totals)
    tower_med = statistics.median(tower)
    result["inference"] = {
        "model_input_size": list(input_size),
        "padded_size": list(x.shape[-2:]),
        "total_seconds": _stats(totals),
        "images_per_second": 1.0 / med,
        "split_seconds": {k: _stats(v) for k, v in splits.items()},
        "tower_alone_seconds": _stats(tower),
        "ratio_to_tower": statistics.median(ratios),
        "ratio_of_medians": med / tower_med,
        "outputs": kept,
        "text_share_of_call": statistics.median(text_share),
        "peak_memory_mb": mem.peak,
        "tower_peak_memory_mb": tower_mem.peak,
        "memory_ratio_to_tower": mem.peak / tower_mem.peak if tower_mem.peak > 0 else float("nan"),
    }
    if args.batch_sizes:
        result["batched"] = batched_inference(seg, image, vocab, args, device)
    if args.onnx:
        result["onnx"] = compare_onnx(seg, image, vocab, args, tuple(x.shape[-2:]))
    if args.train:
        result["train_step"] = train_step(seg, args, device, tower_once)
    return result


def parse_batch_sizes(spec: str) -> list[int]:
    """ "1,2,4" -> [1, 2, 4]; a clear error for anything else."""
    try:
        sizes = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--batch-sizes must be positive integers like 1,2,4; got {spec!r}")
    return sizes


def batched_inference(
    seg, image: np.ndarray, vocab, args: argparse.Namespace, device: torch.device
) -> dict:
    """Images/s of :meth:`Segmenter.predict_batch` on B different random images of the
    benchmark's size (one forward pass of B images padded to a common size, then per-image
    post-processing), for each B of ``--batch-sizes``; medians over ``--repeats``, with each
    stage's median per image (which stage scales badly with B; the whole call's time moves
    with the machine's load as much as with B)."""
    from ovseg.utils.host_memory import release_freed_host_memory
    from ovseg.utils.timing import StageTimer

    rng = np.random.default_rng(1)
    out: dict = {}
    for b in parse_batch_sizes(args.batch_sizes):
        images = [seg.prepare(rng.integers(0, 256, image.shape, dtype=np.uint8)) for _ in range(b)]
        for _ in range(args.warmup):
            seg.predict_batch(images, vocab, task=args.task)
        times, splits = [], {k: [] for k in STAGES}
        release_freed_host_memory()
        with PeakMemory(device) as mem:
            for _ in range(args.repeats):
                timer = StageTimer(device=device)
                t0 = time.perf_counter()
                seg.predict_batch(images, vocab, task=args.task, timer=timer)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                for k in splits:
                    splits[k].append(timer.times.get(k, 0.0))
        med = statistics.median(times)
        out[str(b)] = {
            "seconds": _stats(times),
            "images_per_second": b / med,
            "seconds_per_image": med / b,
            "split_seconds_per_image": {k: statistics.median(v) / b for k, v in splits.items()},
            "peak_memory_mb": mem.peak,
        }
    first = out[next(iter(out))]
    for v in out.values():
        v["per_image_relative_to_first"] = v["seconds_per_image"] / first["seconds_per_image"]
        v["split_relative_to_first"] = {
            k: t / first["split_seconds_per_image"][k]
            if first["split_seconds_per_image"][k]
            else 0.0
            for k, t in v["split_seconds_per_image"].items()
        }
    return out


def compare_onnx(seg, image: np.ndarray, vocab, args: argparse.Namespace, padded) -> dict:
    """Export ``seg`` for the ``padded`` (H, W) input, then time ONNX Runtime and PyTorch on
    the same image in alternating pairs (medians of per-pair ratios); export time, graph sizes,
    and how far the ONNX outputs are from PyTorch's."""
    import tempfile

    from ovseg import Segmenter
    from ovseg.export import export_onnx
    from ovseg.utils.timing import StageTimer

    with tempfile.TemporaryDirectory(prefix="ovseg-bench-onnx-") as tmp:
        t0 = time.perf_counter()
        export_onnx(seg, tmp, sizes=[padded])
        export_s = time.perf_counter() - t0
        graph_mb = {p.name: p.stat().st_size / 2**20 for p in sorted(Path(tmp).glob("*.onnx"))}
        onnx_seg = Segmenter.from_pretrained(tmp, device=args.device)
        out: dict = {"export_seconds": export_s, "graph_mb": graph_mb}
        if not args.skip_text:
            t0 = time.perf_counter()
            onnx_seg.encode_vocabulary(vocab)
            out["text_encoding_cold_seconds"] = time.perf_counter() - t0
        for _ in range(args.warmup):
            seg.predict(image, vocab, task=args.task)
            onnx_seg.predict(image, vocab, task=args.task)
        torch_s, onnx_s, ratios, seam = [], [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = seg.predict(image, vocab, task=args.task)
            torch_s.append(time.perf_counter() - t0)
            timer = StageTimer(device=torch.device(args.device))
            t0 = time.perf_counter()
            b = onnx_seg.predict(image, vocab, task=args.task, timer=timer)
            onnx_s.append(time.perf_counter() - t0)
            ratios.append(onnx_s[-1] / torch_s[-1])
            seam.append(timer.times.get("model", 0.0))
    out.update(
        pytorch_seconds=_stats(torch_s),
        onnxruntime_seconds=_stats(onnx_s),
        onnxruntime_seam_seconds=_stats(seam),
        ratio_onnx_to_pytorch=statistics.median(ratios),
    )
    if a.sem_seg is not None and b.sem_seg is not None:
        out["sem_seg_max_abs_diff"] = float((a.sem_seg - b.sem_seg).abs().max())
    if a.panoptic_seg is not None and b.panoptic_seg is not None:
        out["panoptic_pixel_agreement"] = float((a.panoptic_seg == b.panoptic_seg).float().mean())
    return out


def train_step(
    seg,
    args: argparse.Namespace,
    device: torch.device,
    tower_once: Callable[[], float] | None = None,
) -> dict:
    """Time forward + loss, backward and the optimizer step on random targets, with the host
    memory reuse that ``ovseg-train`` sets (``runtime.reuse_host_memory``; off with
    ``OVSEG_REUSE_HOST_MEMORY=0``).

    ``tower_once`` (the inference part's frozen tower alone, in seconds) runs right before
    and right after each timed step, and the step's ratio is to the mean of the two: taken
    under the same machine load, it makes steps measured on different days (or machines)
    comparable in tower units. One tower run is ~5x shorter than a step, so a burst of load
    moves it more; the bracket halves a single run's weight."""
    from ovseg.utils import precision
    from ovseg.utils.host_memory import (
        host_allocator,
        release_freed_host_memory,
        reuse_freed_host_memory,
    )
    from ovseg.utils.timing import StageTimer

    reuse = reuse_freed_host_memory()

    model = seg.model
    model.train()
    amp = args.amp
    if amp == "auto":
        amp = precision.fastest(device, training=True)
        amp = "none" if amp == "fp32" else amp
    precision.warn_if_emulated(device, amp, "--amp")
    dtype = precision.DTYPES[amp]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    s = args.train_crop
    g = torch.Generator().manual_seed(0)
    vocab = _vocabulary(args.vocab)
    batch = {
        "images": torch.randint(0, 256, (args.batch, 3, s, s), dtype=torch.uint8, generator=g),
        "targets": [
            {
                "labels": torch.randint(0, len(vocab), (5,), generator=g),
                "masks": torch.rand((5, s, s), generator=g) > 0.7,
            }
            for _ in range(args.batch)
        ],
        "vocabulary": vocab,
    }
    model.encode_vocabulary(vocab)
    forward_stages = ("backbone", "pixel_decoder", "transformer_decoder", "criterion")
    times: dict[str, list[float]] = {
        k: [] for k in ("forward_loss", *forward_stages, "backward", "optimizer", "total")
    }
    towers: list[tuple[float, float]] = []  # (before, after) each timed step

    def tower_alone() -> float:
        model.eval()
        seconds = tower_once()
        model.train()
        return seconds

    release_freed_host_memory()
    with PeakMemory(device) as mem:
        for i in range(args.warmup + args.repeats):
            bracket = tower_once is not None and i >= args.warmup
            before = tower_alone() if bracket else 0.0
            timer = StageTimer(device=device)
            t0 = time.perf_counter()
            with (
                timer("forward_loss"),
                torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
            ):
                losses = model(batch, timer=timer)
                loss = sum(losses.values())
            with timer("backward"):
                loss.backward()
            with timer("optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)
            total = time.perf_counter() - t0
            if bracket:
                towers.append((before, tower_alone()))
            if i >= args.warmup:
                for k in ("forward_loss", *forward_stages, "backward", "optimizer"):
                    times[k].append(timer.times.get(k, 0.0))
                times["total"].append(total)
    model.eval()
    paired = {}
    if towers:
        brackets = [(a + b) / 2 for a, b in towers]
        paired = {
            "tower_alone_seconds": _stats([t for pair in towers for t in pair]),
            "ratio_to_tower": statistics.median(t / w for t, w in zip(times["total"], brackets)),
            "per_step": [
                {"seconds": t, "tower_before": a, "tower_after": b}
                for t, (a, b) in zip(times["total"], towers)
            ],
        }
    return {
        "batch": args.batch,
        "crop": s,
        "amp": amp,
        "reuse_host_memory": reuse,
        "host_allocator": host_allocator(),
        "seconds": {k: _stats(v) for k, v in times.items()},
        "peak_memory_mb": mem.peak,
        "peak_memory_total_mb": mem.peak_total,
        **paired,
    }


def format_table(r: dict) -> str:
    inf = r["inference"]
    lines = [
        f"ovseg benchmark — {r['config']} on {r['device']} ({r['threads']} threads, torch {r['torch']})",
        f"inference precision {r.get('precision', '?')}; native on this device: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in r.get("native", {}).items())
        + f"; host memory reuse {'on' if r.get('reuse_host_memory') else 'off'}",
        f"image {r['image_size'][0]}x{r['image_size'][1]} -> model input {inf['model_input_size'][0]}x"
        f"{inf['model_input_size'][1]} (padded {inf['padded_size'][0]}x{inf['padded_size'][1]}), "
        f"task {r['task']}, vocabulary {r['vocabulary']} ({r['num_classes']} classes, {r['num_prompts']} prompts)",
        f"parameters: total {r['params']['total']:,}, trainable {r['params']['trainable']:,}, frozen {r['params']['frozen']:,}",
        "",
        f"{'stage':<22}{'median s':>10}{'min s':>10}{'max s':>10}{'share':>8}",
    ]
    med = inf["total_seconds"]["median"]
    for k, v in inf["split_seconds"].items():
        lines.append(
            f"{k:<22}{v['median']:>10.4f}{v['min']:>10.4f}{v['max']:>10.4f}{v['median'] / med:>8.1%}"
        )
    t = inf["total_seconds"]
    lines += [
        f"{'total':<22}{t['median']:>10.4f}{t['min']:>10.4f}{t['max']:>10.4f}",
        f"{'tower alone':<22}{inf['tower_alone_seconds']['median']:>10.4f}",
        "",
        f"ratio total / tower: {inf['ratio_to_tower']:.2f}x   throughput {inf['images_per_second']:.3f} img/s",
        f"peak memory: {inf['peak_memory_mb']:.0f} MB (tower alone {inf['tower_peak_memory_mb']:.0f} MB, "
        + (
            f"ratio {inf['memory_ratio_to_tower']:.2f}x)"
            if math.isfinite(inf["memory_ratio_to_tower"])
            # A caching malloc (tcmalloc, jemalloc) serves the tower from pages it already holds.
            else "ratio n/a: the RSS did not grow)"
        ),
        f"text share of a call with a cached vocabulary: {inf['text_share_of_call']:.3%}",
        f"outputs of the last run: {inf['outputs']['panoptic']} panoptic segments, "
        f"{inf['outputs']['instance']} instances"
        + ("" if r.get("weights") else " (random weights: how many queries survive is arbitrary)"),
    ]
    if "text_encoding_cold_seconds" in r:
        lines.append(f"cold text encoding: {r['text_encoding_cold_seconds']:.2f} s")
    if "onnx" in r:
        o = r["onnx"]
        graphs = ", ".join(f"{k} {v:.1f} MB" for k, v in o["graph_mb"].items())
        lines.append(
            f"ONNX Runtime: {o['onnxruntime_seconds']['median']:.3f} s per image (seam "
            f"{o['onnxruntime_seam_seconds']['median']:.3f} s) vs PyTorch "
            f"{o['pytorch_seconds']['median']:.3f} s: ratio {o['ratio_onnx_to_pytorch']:.2f}x; "
            f"export {o['export_seconds']:.1f} s; graphs {graphs}"
        )
        if "panoptic_pixel_agreement" in o:
            lines.append(
                f"ONNX vs PyTorch panoptic pixel agreement {o['panoptic_pixel_agreement']:.4%}"
            )
    if "train_step" in r:
        ts = r["train_step"]
        s = ts["seconds"]
        lines.append(
            f"train step (batch {ts['batch']}, crop {ts['crop']}, amp {ts['amp']}, malloc "
            f"{ts.get('host_allocator', '?')}, host memory reuse "
            f"{'on' if ts.get('reuse_host_memory') else 'off'}): "
            f"{s['total']['median']:.3f} s = forward+loss {s['forward_loss']['median']:.3f} + backward "
            f"{s['backward']['median']:.3f} + optimizer {s['optimizer']['median']:.3f}; peak memory "
            f"{ts['peak_memory_mb']:.0f} MB above the built model, {ts['peak_memory_total_mb']:.0f} MB "
            "in all"
        )
        lines.append(
            "  forward: "
            + ", ".join(
                f"{k} {s[k]['median']:.3f} s"
                for k in ("backbone", "pixel_decoder", "transformer_decoder", "criterion")
            )
        )
        if "ratio_to_tower" in ts:
            lines.append(
                "  step / tower alone at the inference size (before and after each step): "
                f"{ts['ratio_to_tower']:.2f}x "
                f"(tower {ts['tower_alone_seconds']['median']:.3f} s)"
            )
    if "batched" in r:
        lines.append("batched inference (predict_batch):")
        for b, v in r["batched"].items():
            lines.append(
                f"  batch {b}: {v['seconds']['median']:.3f} s, {v['images_per_second']:.3f} img/s, "
                f"{v['seconds_per_image']:.3f} s per image "
                f"({v['per_image_relative_to_first']:.2f}x batch {next(iter(r['batched']))}), "
                f"peak memory {v['peak_memory_mb']:.0f} MB"
            )
            split, rel = v.get("split_seconds_per_image", {}), v.get("split_relative_to_first", {})
            lines.append(
                "    per image: "
                + ", ".join(
                    f"{k} {split[k]:.3f} s ({rel[k]:.2f}x)"
                    for k in ("backbone", "pixel_decoder", "transformer_decoder")
                    if k in split
                )
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        result = run(args)
    except (ValueError, KeyError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
