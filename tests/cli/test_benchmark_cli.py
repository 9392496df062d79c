"""tools/benchmark.py smoke run on the tiny config (structure and consistency, no timing asserts)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch
from ovseg_testing import REPO

from ovseg.cli.benchmark import main


def test_benchmark_reports_split_ratios_and_params(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            str(REPO / "ovseg/configs/tests/fcclip_tiny.yaml"),
            "--size",
            "96x128",
            "--vocab",
            "12",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--train",
            "--train-crop",
            "64",
            "--batch-sizes",
            "1,2",
            "--out",
            str(out),
            "model.decoder.num_queries=20",
        ]
    )
    assert code == 0
    r = json.loads(out.read_text())
    inf = r["inference"]
    stages = inf["split_seconds"]
    assert set(stages) >= {
        "backbone",
        "pixel_decoder",
        "transformer_decoder",
        "classifiers",
        "postprocess",
        "text",
    }
    assert sum(v["median"] for v in stages.values()) <= inf["total_seconds"]["max"] * 1.05
    assert inf["ratio_to_tower"] > 1.0
    assert inf["model_input_size"] == [200, 267]  # the tiny config's test size
    p = r["params"]
    assert p["total"] == p["trainable"] + p["frozen"] and p["frozen"] > 0
    assert r["num_classes"] == 12 and r["num_prompts"] == 12 * 14
    from ovseg.utils.host_memory import host_allocator

    assert r["train_step"]["host_allocator"] == host_allocator()
    # --amp auto: bf16 only where this CPU computes it natively
    from ovseg.utils.precision import fastest, native

    assert r["train_step"]["amp"] == {"fp32": "none"}.get(fastest("cpu"), fastest("cpu"))
    assert r["precision"] == "fp32"
    assert r["native"] == {
        "bf16": native("cpu", torch.bfloat16),
        "fp16": native("cpu", torch.float16),
    }
    ts = r["train_step"]["seconds"]
    assert ts["total"]["median"] > 0
    parts = ("backbone", "pixel_decoder", "transformer_decoder", "criterion")
    assert all(ts[k]["median"] > 0 for k in parts)
    assert sum(ts[k]["median"] for k in parts) <= ts["forward_loss"]["max"] * 1.05
    # Each timed step is bracketed by runs of the tower alone, right before and right after
    # it; its ratio is to their mean, and the reported ratio is the median over the steps.
    step = r["train_step"]
    assert step["tower_alone_seconds"]["n"] == 2 * 2  # --repeats 2, the warm-up step unpaired
    assert step["tower_alone_seconds"]["median"] > 0
    per_step = step["per_step"]
    assert len(per_step) == ts["total"]["n"] == 2
    assert sorted(p["seconds"] for p in per_step) == [ts["total"]["min"], ts["total"]["max"]]
    ratios = [p["seconds"] / ((p["tower_before"] + p["tower_after"]) / 2) for p in per_step]
    assert step["ratio_to_tower"] == pytest.approx(statistics.median(ratios), rel=1e-12)
    lo = ts["total"]["min"] / step["tower_alone_seconds"]["max"]
    hi = ts["total"]["max"] / step["tower_alone_seconds"]["min"]
    assert lo <= step["ratio_to_tower"] <= hi
    batched = r["batched"]
    assert list(batched) == ["1", "2"]
    assert batched["1"]["per_image_relative_to_first"] == 1.0
    for b, v in batched.items():
        assert v["images_per_second"] * v["seconds_per_image"] == pytest.approx(1.0)
        assert v["seconds"]["median"] == pytest.approx(int(b) * v["seconds_per_image"])
        # each stage per image, timed inside the same calls (so within the call's time)
        split = v["split_seconds_per_image"]
        assert all(split[k] > 0 for k in ("backbone", "pixel_decoder", "transformer_decoder"))
        assert sum(split.values()) <= v["seconds"]["max"] / int(b) * 1.05
    one, two = batched["1"], batched["2"]
    for k, t in two["split_seconds_per_image"].items():
        if one["split_seconds_per_image"][k]:
            assert one["split_relative_to_first"][k] == 1.0
            assert two["split_relative_to_first"][k] == pytest.approx(
                t / one["split_seconds_per_image"][k]
            )
    printed = capsys.readouterr().out
    assert "ratio total / tower" in printed and "batch 2:" in printed
    assert "    per image: backbone" in printed
    assert "forward: backbone" in printed
    assert (
        "step / tower alone at the inference size (before and after each step): "
        f"{step['ratio_to_tower']:.2f}x" in printed
    )
    assert f"malloc {host_allocator()}, host memory reuse" in printed
    yes, on = {True: "yes", False: "no"}, {True: "on", False: "off"}
    assert (
        f"inference precision fp32; native on this device: bf16 {yes[r['native']['bf16']]}, "
        f"fp16 {yes[r['native']['fp16']]}; host memory reuse {on[r['reuse_host_memory']]}"
        in printed
    )


def test_benchmark_bad_batch_sizes(capsys):
    config = str(REPO / "ovseg/configs/tests/fcclip_tiny.yaml")
    assert main([config, "--batch-sizes", "1,two"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err


def test_benchmark_bad_vocabulary(capsys):
    assert (
        main(
            [
                str(REPO / "ovseg/configs/tests/fcclip_tiny.yaml"),
                "--vocab",
                "ade20k-15",
                "--repeats",
                "1",
            ]
        )
        == 2
    )
    assert "did you mean" in capsys.readouterr().err


def test_benchmark_onnx_compares_runtimes_on_the_same_input(tmp_path):
    """``--onnx``: export to a temporary folder, paired ONNX Runtime / PyTorch runs; the
    outputs agree (the export is the same function) and the report names graphs and times."""
    import pytest

    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    argv = [str(REPO / "ovseg/configs/tests/fcclip_tiny.yaml"), "--size", "96x128", "--vocab",
            "12", "--repeats", "2", "--warmup", "1", "--onnx", "--skip-text", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    o = json.loads(out.read_text())["onnx"]
    assert set(o["graph_mb"]) == {"image_224x288.onnx", "text.onnx"}
    assert all(v > 0 for v in o["graph_mb"].values()) and o["export_seconds"] > 0
    assert o["onnxruntime_seconds"]["n"] == o["pytorch_seconds"]["n"] == 2
    assert o["ratio_onnx_to_pytorch"] > 0
    assert o["panoptic_pixel_agreement"] == 1.0
