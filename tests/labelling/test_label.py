"""tools/label.py end to end on the tiny fixture model: COCO output that pycocotools reads, a
SIGKILLed run that resumes without recomputing, torchrun and Ray giving one process's result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ovseg_testing import fixture_dir
from PIL import Image

from ovseg.cli.label import main
from ovseg.data.synthetic import render_synthetic_scene
from ovseg.labelling.store import LabelStore, result_name, work_items
from ovseg.utils.image import rgb2id

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml"
VOCAB = "person; flag; sky [stuff]; astronaut; wall [stuff]; cup; floor [stuff]; tree [stuff]"
SMALL = ["model.test.min_size=64", "model.test.max_size=128"]


def _model() -> list[str]:
    weights = fixture_dir("fcclip_tiny") / "fcclip_tiny_a.pth"
    return ["--config", str(TINY), "--weights", str(weights), "--opts", *SMALL]


def _args(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(inputs), "--vocab", VOCAB, "--output", str(out), "--device", "cpu",
            "--no-progress", "--task", "instance", "--min-score", "0.01", *extra, *_model()]  # fmt: skip


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def _make_images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, _, _ = render_synthetic_scene(rng, 64, 80 if i % 2 else 64)
        Image.fromarray(image).save(folder / f"scene{i}.png")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Six generated images (two with the same name in a subfolder) and a corrupt file, one
    plain run with one thread."""
    src = tmp_path_factory.mktemp("images")
    _make_images(src, 5)
    _make_images(src / "sub", 1, seed=1)
    (src / "broken.png").write_bytes(b"\x89PNG definitely not a PNG")
    listing = src / "list.txt"
    listing.write_text(
        "\n".join([*(f"scene{i}.png" for i in range(5)), "broken.png", "sub/scene0.png"]) + "\n"
    )
    out = tmp_path_factory.mktemp("straight") / "out"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess runs below (OMP_NUM_THREADS=1)
    try:
        rc = main(_args(listing, out, "--workers", "0"))
    finally:
        torch.set_num_threads(threads)
    return listing, out, rc


def _load(out: Path) -> dict:
    return json.loads((out / "annotations.json").read_text())


def _assert_same_annotations(a: dict, b: dict) -> None:
    """Equal images, categories and masks; scores within float rounding of another process."""
    assert a["images"] == b["images"] and a["categories"] == b["categories"]
    assert len(a["annotations"]) == len(b["annotations"])

    def key(x):
        return (x["image_id"], x["category_id"], x["segmentation"]["counts"], x["id"])

    for x, y in zip(sorted(a["annotations"], key=key), sorted(b["annotations"], key=key)):
        assert {k: v for k, v in x.items() if k != "score"} == {
            k: v for k, v in y.items() if k != "score"
        }
        assert abs(x["score"] - y["score"]) < 1e-5


def test_annotations_load_with_pycocotools(straight):
    from pycocotools.coco import COCO

    listing, out, rc = straight
    assert rc == 1  # the corrupt file failed; the others are labelled
    failed = (out / "failed.txt").read_text().splitlines()
    assert len(failed) == 1 and failed[0].startswith(f"{listing.parent / 'broken.png'}\t")
    data = _load(out)
    assert [im["id"] for im in data["images"]] == [1, 2, 3, 4, 5, 7]  # input order; 6 failed
    assert data["images"][5]["file_name"] == "sub/scene0.png"
    assert data["info"]["image_root"] == str(listing.parent.resolve())
    names = [c["name"] for c in data["categories"]]
    assert names == ["person", "flag", "sky", "astronaut", "wall", "cup", "floor", "tree"]
    assert [c["isthing"] for c in data["categories"]] == [1, 1, 0, 1, 0, 1, 0, 0]

    coco = COCO(str(out / "annotations.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) >= 6
    for a in anns:
        img = coco.imgs[a["image_id"]]
        mask = coco.annToMask(a)
        assert mask.shape == (img["height"], img["width"])
        assert int(mask.sum()) == a["area"] > 0
        ys, xs = np.nonzero(mask)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
        assert a["iscrowd"] == 0 and 0.01 <= a["score"] <= 1
        assert coco.cats[a["category_id"]]["isthing"] == 1  # instances are things
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "instance" and run["weights"]["size"] > 0
    assert run["vocabulary"][2] == {"name": "sky", "isthing": False}
    assert "torch" in run["versions"] and "model:" in run["config"]


def test_panoptic_png_and_json(straight, tmp_path):
    listing, _, _ = straight
    out = tmp_path / "pan"
    args = _args(listing, out, "--save-png", "--workers", "1", "--batch-size", "2")
    rc = main([a if a != "instance" else "panoptic" for a in args])
    assert rc == 1
    pan = json.loads((out / "panoptic.json").read_text())
    coco = _load(out)
    assert [a["image_id"] for a in pan["annotations"]] == [im["id"] for im in coco["images"]]
    for entry in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(out / "panoptic" / entry["file_name"]).convert("RGB")))
        segs = entry["segments_info"]
        assert sorted(np.unique(ids[ids > 0]).tolist()) == sorted(s["id"] for s in segs)
        for s in segs:
            assert int((ids == s["id"]).sum()) == s["area"]


def test_kill_and_resume_recomputes_nothing(straight, tmp_path):
    listing, ref, _ = straight
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "tools" / "label.py"), *_args(listing, out, "--workers", "0")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    per_image = out / "per_image"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = per_image.glob("*.json") if per_image.is_dir() else []
            if sum(not p.name.endswith(".failed.json") for p in done) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "annotations.json").exists()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in per_image.glob("*.json")}
    finished = {k: v for k, v in finished.items() if not k.endswith(".failed.json")}
    assert 2 <= len(finished) < 6

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_args(listing, out, "--workers", "0")) == 1  # the corrupt file again
    finally:
        torch.set_num_threads(threads)
    for name, stamp in finished.items():  # not recomputed, not rewritten
        p = per_image / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, name
    assert _load(out) == _load(ref)


def test_resume_checks_the_run(straight, tmp_path, capsys):
    listing, _, _ = straight
    out = tmp_path / "one"
    one = tmp_path / "one.txt"
    one.write_text(f"{listing.parent / 'scene1.png'}\n")
    assert main(_args(one, out)) == 0
    before = (out / "annotations.json").read_text()
    capsys.readouterr()
    rc = main([a if a != "0.01" else "0.2" for a in _args(one, out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0] == (
        f"error: {out / 'run.json'} is a different run: its min_score is '0.01', this run's is "
        "'0.2'; pass --overwrite to start again"
    )
    assert main([a if a != "0.01" else "0.2" for a in _args(one, out)] + ["--overwrite"]) == 0
    assert json.loads((out / "run.json").read_text())["min_score"] == 0.2
    (out / "annotations.json").unlink()
    assert main(["--output", str(out), "--merge-only"]) == 0
    merged = _load(out)
    assert [im["file_name"] for im in merged["images"]] == ["scene1.png"]
    assert all(a["score"] >= 0.2 for a in merged["annotations"])
    assert len(merged["annotations"]) <= len(json.loads(before)["annotations"])


def test_torchrun_two_processes_equal_one(straight, tmp_path):
    listing, ref, _ = straight
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tools" / "label.py"), *_args(listing, out, "--workers", "1")]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert "1 failed" in r.stderr, r.stderr[-3000:]  # exit 1: the corrupt file
    _assert_same_annotations(_load(out), _load(ref))
    assert (out / "failed.txt").read_text() == (ref / "failed.txt").read_text()


def test_ray_backend_equals_one_process(straight, tmp_path):
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install -e '.[ray]')")
    listing, ref, _ = straight
    out = tmp_path / "ray"
    args = _args(listing, out, "--backend", "ray", "--ray-cpus", "2", "--ray-actors", "2")
    cmd = [sys.executable, str(ROOT / "tools" / "label.py"), *args, "--batch-size", "2"]
    env = {**_env(), "RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert r.returncode == 1, r.stderr[-3000:]  # the corrupt file
    _assert_same_annotations(_load(out), _load(ref))
    assert (out / "failed.txt").read_text() == (ref / "failed.txt").read_text()


def test_result_names_are_safe_and_distinct(tmp_path):
    a, b = tmp_path / "x" / "img.jpg", tmp_path / "y" / "img.jpg"
    evil = tmp_path / "..evil name;rm -rf.png"
    names = [result_name(p) for p in (a, b, evil)]
    assert len(set(names)) == 3 and all("/" not in n and not n.startswith(".") for n in names)
    assert names[0].startswith("img.jpg-") and names[2].startswith("evil_name_rm_-rf.png-")
    store = LabelStore(tmp_path / "out")
    items = work_items([a, b])
    store.write_result(items[0], {"height": 1, "width": 1, "annotations": []})
    store.write_failure(items[1], "cannot read")
    assert store.pending(items) == [items[1]]  # failed images are tried again
    store.write_result(items[1], {"height": 1, "width": 1, "annotations": []})
    assert store.pending(items) == [] and not store.failure_path(items[1]).exists()
