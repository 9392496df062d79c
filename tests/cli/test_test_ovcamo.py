"""``tools/test.py CONFIG --dataset ovcamo`` end to end on a generated OVCamo-layout set."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from ovseg_testing import REPO

from ovseg.cli import test as test_cli
from ovseg.evaluation.ovcamo import METRIC_KEYS
from ovseg.text.vocabulary import Vocabulary

TINY = str(REPO / "configs/tests/fcclip_tiny.yaml")
TEST_CLASSES = ["crab", "owl", "leaf-tailed gecko"]


def make_ovcamo_layout(root: Path, n_test: int = 4, n_train: int = 2) -> Path:
    """OVCamo's release layout: splitted_ovcamo.yaml (relative paths), class_info.json,
    sample_info.json, {train,test}/{image,mask}/<unique_id>.{jpg,png}; returns the yaml."""
    rng = np.random.default_rng(0)
    classes = [{"id": i, "name": n, "split": "test"} for i, n in enumerate(TEST_CLASSES)]
    classes.append({"id": 3, "name": "frog", "split": "train"})
    samples = []
    for split, n, names in (("test", n_test, TEST_CLASSES), ("train", n_train, ["frog"])):
        (root / split / "image").mkdir(parents=True)
        (root / split / "mask").mkdir(parents=True)
        for i in range(n):
            uid = f"ovc_{split[:2]}_{i:04d}"
            h, w = 40 + 4 * i, 56
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            mask = np.zeros((h, w), np.uint8)
            mask[10:30, 12 + i : 40] = 255
            cv2.imwrite(str(root / split / "image" / f"{uid}.jpg"), img)
            cv2.imwrite(str(root / split / "mask" / f"{uid}.png"), mask)
            samples.append(
                {"unique_id": uid, "base_class": names[i % len(names)],
                 "image": f"orig_{i}.jpg", "mask": f"orig_{i}.png"}
            )  # fmt: skip
    (root / "class_info.json").write_text(json.dumps(classes))
    (root / "sample_info.json").write_text(json.dumps(samples))
    yaml_path = root / "splitted_ovcamo.yaml"
    yaml_path.write_text(
        "OVCamo_TR_IMAGE_DIR: train/image\nOVCamo_TR_MASK_DIR: train/mask\n"
        "OVCamo_TE_IMAGE_DIR: test/image\nOVCamo_TE_MASK_DIR: test/mask\n"
        "OVCamo_CLASS_JSON_PATH: class_info.json\nOVCamo_SAMPLE_JSON_PATH: sample_info.json\n"
    )
    return yaml_path


@pytest.mark.parametrize("strategy", ["semantic-sum", "best-query"])
def test_test_py_ovcamo_end_to_end(tmp_path, capsys, strategy):
    yaml_path = make_ovcamo_layout(tmp_path / "ovcamo")
    out = tmp_path / "out"
    rc = test_cli.main(
        [TINY, "--dataset", "ovcamo", "--data-root", str(tmp_path), "--out", str(out),
         "--single-object", strategy, "--no-progress", "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["ovcamo"]) == set(METRIC_KEYS)
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in metrics["ovcamo"].values())
    assert metrics["num_evaluated"] == 4 and metrics["num_classes"] == 3
    files = sorted(p.name for p in (out / "predictions").iterdir())
    assert len(files) == 4 and all(f.startswith("[") and f.endswith(".png") for f in files)
    # the saved masks are at GT size, so the official evaluator would accept them as they are
    for f in files:
        uid = f.split("]", 1)[1]
        gt = cv2.imread(str(yaml_path.parent / "test" / "mask" / uid), cv2.IMREAD_GRAYSCALE)
        pred = cv2.imread(str(out / "predictions" / f), cv2.IMREAD_GRAYSCALE)
        assert pred.shape == gt.shape
    assert "sm " in capsys.readouterr().out


def _err_line(capsys, argv, code=1) -> str:
    assert test_cli.main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if "error" in x]  # besides the random-weights banner
    assert len(lines) == 1 and lines[0].startswith("test.py: error:"), err
    return lines[0]


def test_test_py_ovcamo_bad_inputs(tmp_path, capsys):
    yaml_path = make_ovcamo_layout(tmp_path / "ovcamo", n_test=2)
    base = [TINY, "--dataset", "ovcamo", "--data-root", str(yaml_path), "--no-progress",
            "--out", str(tmp_path / "out")]  # fmt: skip
    # unreadable test image
    (yaml_path.parent / "test" / "image" / "ovc_te_0001.jpg").write_bytes(b"garbage")
    err = _err_line(capsys, base)
    assert "ovc_te_0001.jpg" in err
    # missing yaml key
    text = yaml_path.read_text()
    yaml_path.write_text(text.replace("OVCamo_TE_MASK_DIR: test/mask\n", ""))
    err = _err_line(capsys, base)
    assert "splitted_ovcamo.yaml" in err and "OVCamo_TE_MASK_DIR" in err
    # no yaml at all
    err = _err_line(capsys, [*base[:3], "--data-root", str(tmp_path / "nowhere"), *base[5:]], 2)
    assert "splitted_ovcamo.yaml" in err and "prepare_data.py ovcamo" in err


def test_prepare_data_ovcamo_and_verify(tmp_path, capsys):
    from ovseg.cli import prepare_data

    src = make_ovcamo_layout(tmp_path / "release")
    dst = tmp_path / "data"
    assert prepare_data.main(["ovcamo", "--src", str(src), "--dst", str(dst), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "ok   test: 4 samples" in out and "ok   train: 2 samples" in out
    assert "note 6 images, 1 train / 3 test classes (official release: 11483" in out
    assert (dst / "ovcamo" / "test" / "mask" / "ovc_te_0002.png").is_file()
    # training labels: the train class index (frog = 0) inside the mask, 255 (ignore) outside
    lab = cv2.imread(str(dst / "ovcamo" / "train" / "label" / "ovc_tr_0001.png"), 0)
    assert set(np.unique(lab).tolist()) == {0, 255} and lab[20, 30] == 0 and lab[0, 0] == 255
    assert (dst / "ovcamo" / "train_classes.txt").read_text() == "frog\n"
    test_vocab = Vocabulary.from_file(dst / "ovcamo" / "test_classes.txt")
    assert test_vocab.names == list(TEST_CLASSES)
    # the built-in name reads the prepared release (its names are not ovseg's to ship)
    from ovseg.text.vocabulary import resolve_vocabulary

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVSEG_DATA", str(tmp_path / "nowhere"))
        with pytest.raises(
            FileNotFoundError, match=r"vocabulary 'ovcamo' .*prepare_data\.py ovcamo"
        ):
            Vocabulary.from_name("ovcamo")
        mp.setenv("OVSEG_DATA", str(dst))
        assert resolve_vocabulary("ovcamo").names == list(TEST_CLASSES)
        assert Vocabulary.from_name("ovcamo-train").names == ["frog"]
    from ovseg.config.data import DatasetConfig
    from ovseg.data import build_dataset

    cfg = DatasetConfig(
        type="semantic_folder",
        image_dir=str(dst / "ovcamo" / "train" / "image"),
        label_dir=str(dst / "ovcamo" / "train" / "label"),
        classes=str(dst / "ovcamo" / "train_classes.txt"),
    )
    assert len(build_dataset(cfg, train=False)) == 2
    # ... and a short training run on them, as docs/ovcamo.md writes it
    from ovseg.cli import train as train_cli

    work = tmp_path / "ovcamo_train"
    rc = train_cli.main([
        str(REPO / "ovseg/configs/tests/fcclip_tiny_train.yaml"), "--work-dir", str(work),
        "--no-progress", "data.train.type=semantic_folder",
        f"data.train.image_dir={cfg.image_dir}", f"data.train.label_dir={cfg.label_dir}",
        f"data.train.classes={cfg.classes}", "model.text.templates=camo",
        "schedule.max_iter=2", "schedule.checkpoint_period=0", "data.batch_size=2",
        "data.aug.crop_size=64", "model.loss.train_num_points=256",
    ])  # fmt: skip
    assert rc == 0
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if "total_loss" in r] and all(
        np.isfinite(r["total_loss"]) for r in rows if "total_loss" in r
    )
    assert (work / "model_final.pth").is_file()
    # a corrupt mask fails verification, naming the file
    (dst / "ovcamo" / "test" / "mask" / "ovc_te_0002.png").write_bytes(b"x")
    assert prepare_data.main(["ovcamo", "--dst", str(dst), "--verify"]) == 1
    assert "ovc_te_0002.png (unreadable)" in capsys.readouterr().out
    # a release without the env file: one line naming the folder
    assert prepare_data.main(["ovcamo", "--src", str(tmp_path), "--dst", str(dst)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no splitted_ovcamo.yaml under" in err
