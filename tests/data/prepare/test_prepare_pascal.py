"""Pascal VOC and Pascal Context converters on tiny inputs in the official raw formats (palette
PNGs, .mat LabelMaps), read back through the benchmark readers; verify and the command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from ovseg.cli.prepare_data import main
from ovseg.data.benchmarks import load_benchmark
from ovseg.data.prepare import PrepareError, prepare, verify
from ovseg.data.prepare.pascal import PC59_IDS
from ovseg.text.vocabulary import Vocabulary

VOC_IDS = ["2007_000033", "2007_000042"]


def _palette_png(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    pal = np.zeros((256, 3), np.uint8)
    pal[1:21] = np.arange(1, 21)[:, None] * 10
    pal[255] = 224
    img.putpalette(pal.ravel().tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _voc_raw(root: Path) -> dict[str, np.ndarray]:
    voc = root / "VOCdevkit" / "VOC2012"
    labels = {}
    for k, i in enumerate(VOC_IDS):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 30, 3), 40 * k, np.uint8)).save(
            voc / "JPEGImages" / f"{i}.jpg"
        )
        lab = np.zeros((20, 30), np.uint8)
        lab[5:15, 5:20] = 15  # person
        lab[5:15, 20:22] = 255  # object border
        lab[0, 0] = 20 - k  # tvmonitor / train
        _palette_png(voc / "SegmentationClass" / f"{i}.png", lab)
        labels[i] = lab
    split = voc / "ImageSets" / "Segmentation" / "val.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(VOC_IDS) + "\n")
    return labels


def test_voc_21_and_20(tmp_path):
    raw = _voc_raw(tmp_path / "raw")
    assert prepare("pascal-voc-21", tmp_path / "raw", tmp_path / "data") == [
        "pascal-voc-21",
        "pascal-voc-20",
    ]
    voc21 = load_benchmark("pascal-voc-21", tmp_path / "data")
    voc20 = load_benchmark("pascal-voc-20", tmp_path / "data")
    assert [Path(r["file_name"]).stem for r in voc21.records] == VOC_IDS
    for r21, r20 in zip(voc21.records, voc20.records):
        lab21 = np.asarray(Image.open(r21["sem_seg_file_name"]))
        lab20 = np.asarray(Image.open(r20["sem_seg_file_name"]))
        raw_lab = raw[Path(r21["file_name"]).stem]
        assert np.array_equal(lab21, raw_lab)  # palette indices kept, not colours
        assert lab20[10, 10] == 14 and lab20[0, 0] == raw_lab[0, 0] - 1  # person -> 14
        assert lab20[1, 1] == 255 and lab20[10, 20] == 255  # background and border ignored
        # VOC-20 class k is the vocabulary's class k
        assert Vocabulary.from_name("pascal-voc-20")[14].name == "person"

    report = verify(
        "pascal-voc", tmp_path / "data", expected={"pascal-voc-21": 2, "pascal-voc-20": 2}
    )
    assert report.ok, report.text()
    report = verify("pascal-voc", tmp_path / "data")
    assert not report.ok and "FAIL pascal-voc-21: 2 images, expected 1449" in report.text()


def test_voc_bad_label_values_are_named(tmp_path):
    _voc_raw(tmp_path / "raw")
    prepare("pascal-voc", tmp_path / "raw", tmp_path / "data")
    bad = tmp_path / "data/pascal_voc_d2/annotations_pascal21/validation" / f"{VOC_IDS[1]}.png"
    Image.fromarray(np.full((20, 30), 33, np.uint8)).save(bad)
    report = verify("pascal-voc-21", tmp_path / "data", expected={"pascal-voc-21": 2})
    assert not report.ok
    assert f"{VOC_IDS[1]}.png (33)" in report.text() and "outside 0..20" in report.text()


def test_voc_missing_files_are_named(tmp_path):
    _voc_raw(tmp_path / "raw")
    (tmp_path / "raw/VOCdevkit/VOC2012/JPEGImages" / f"{VOC_IDS[0]}.jpg").unlink()
    with pytest.raises(PrepareError, match=f"{VOC_IDS[0]}.jpg") as e:
        prepare("pascal-voc", tmp_path / "raw", tmp_path / "data")
    assert "VOCtrainval_11-May-2012.tar" in str(e.value)
    with pytest.raises(PrepareError, match="VOC2012"):
        prepare("pascal-voc", tmp_path, tmp_path / "data")  # no VOCdevkit at all


CTX_IDS = ["2008_000002", "2008_000003"]


def test_pascal_context_from_mat(tmp_path):
    voc = tmp_path / "raw" / "VOCdevkit" / "VOC2010"
    (voc / "trainval").mkdir(parents=True)
    (voc / "JPEGImages").mkdir(parents=True)
    maps = {}
    for k, i in enumerate(CTX_IDS):
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(voc / "JPEGImages" / f"{i}.jpg")
        lm = np.zeros((12, 16), np.uint16)  # 0: unlabelled
        lm[:6] = 2  # aeroplane (PC-59 class 0)
        lm[6:, :8] = 284  # person (PC-59 class 36)
        lm[6:, 8:] = 1 + k  # accordion (not in PC-59) / aeroplane
        lm[0, 0] = 459  # wood? no: the last of the 459 (PC-459 class 458)
        savemat(voc / "trainval" / f"{i}.mat", {"LabelMap": lm})
        maps[i] = lm
    split = voc / "ImageSets" / "Main" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("\n".join([*CTX_IDS, "2008_999999"]) + "\n")  # an id without a .mat: skipped
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(voc / "JPEGImages" / "2008_999999.jpg")

    assert (
        main(["pascal-context", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "d")]) == 0
    )
    pc59 = load_benchmark("pascal-context-59", tmp_path / "d")
    pc459 = load_benchmark("pascal-context-459", tmp_path / "d")
    assert [r["image_id"] for r in pc59.records] == CTX_IDS
    for r59, r459 in zip(pc59.records, pc459.records):
        lm = maps[r59["image_id"]]
        l59 = np.asarray(Image.open(r59["sem_seg_file_name"]))
        l459 = np.asarray(Image.open(r459["sem_seg_file_name"]))
        assert l459.dtype == np.uint16 and np.array_equal(l459, np.where(lm == 0, 65535, lm - 1))
        assert l59[3, 3] == 0 and l59[8, 2] == PC59_IDS.index(284) == 36
        assert l59[0, 0] == 255 and l59[1, 1] == 0
        assert l59[8, 10] == (255 if r59["image_id"] == CTX_IDS[0] else 0)
    assert Vocabulary.from_name("pascal-context-59")[36].name == "person"
    assert Vocabulary.from_name("pascal-context-459")[283].name == "person"
    report = verify("pascal-context", tmp_path / "d",
                    expected={"pascal-context-59": 2, "pascal-context-459": 2})  # fmt: skip
    assert report.ok, report.text()


def test_cli_verify_and_errors(tmp_path, capsys):
    _voc_raw(tmp_path / "raw")
    argv = ["pascal-voc", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "d"), "--verify"]
    assert main(argv) == 1  # converted, but 2 images are not the official 1,449
    out = capsys.readouterr().out
    assert "wrote pascal-voc-21, pascal-voc-20" in out and "expected 1449" in out
    assert main(["cityscapes", "--dst", str(tmp_path / "d"), "--verify"]) == 1
    out = capsys.readouterr().out
    assert "FAIL cityscapes" in out and "leftImg8bit" in out and "prepare_data.py cityscapes" in out
    assert main(["ade20k-847", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "d")]) == 2
    assert "ADE20K_2021_17_01/index_ade20k.pkl not found" in capsys.readouterr().err
    assert main(["pascal-vok", "--verify"]) == 2
    assert "did you mean 'pascal-voc'" in capsys.readouterr().err
    assert main(["pascal-voc"]) == 2
    assert "--src" in capsys.readouterr().err
    # an option of another converter is named, before anything is written
    argv = ["pascal-voc", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "new")]
    assert main([*argv, "--mapping", "m.json"]) == 2
    assert "pascal-voc takes no option mapping" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_verify_names_a_corrupt_label_instead_of_crashing(tmp_path, capsys):
    """Issue 18, case 12: ``--verify`` on a truncated label map is a FAIL line naming the file
    (exit 1), the other checks still run."""
    _voc_raw(tmp_path / "raw")
    prepare("pascal-voc", tmp_path / "raw", tmp_path / "data")
    bad = tmp_path / "data/pascal_voc_d2/annotations_pascal21/validation" / f"{VOC_IDS[0]}.png"
    bad.write_bytes(bad.read_bytes()[:40])
    report = verify("pascal-voc-21", tmp_path / "data", expected={"pascal-voc-21": 2})
    assert not report.ok
    text = report.text()
    assert f"1 label map(s) cannot be read (truncated or not an image): {VOC_IDS[0]}.png" in text
    assert "2 images" in text  # the count check still ran
    assert main(["pascal-voc-21", "--dst", str(tmp_path / "data"), "--verify"]) == 1
    assert f"{VOC_IDS[0]}.png" in capsys.readouterr().out


def test_pascal_context_corrupt_mat_is_one_line(tmp_path, capsys):
    voc = tmp_path / "raw" / "VOCdevkit" / "VOC2010"
    (voc / "trainval").mkdir(parents=True)
    (voc / "JPEGImages").mkdir(parents=True)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(voc / "JPEGImages" / f"{CTX_IDS[0]}.jpg")
    (voc / "trainval" / f"{CTX_IDS[0]}.mat").write_bytes(b"MATLAB 5.0 broken" * 3)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "val.txt").write_text(CTX_IDS[0] + "\n")
    argv = ["pascal-context", "--src", str(tmp_path / "raw"), "--dst", str(tmp_path / "d")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot read {voc}/trainval/{CTX_IDS[0]}.mat" in err
