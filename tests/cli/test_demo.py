"""demo's main([...]) end to end on the tiny config, plus its argument and input handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.cli.demo import collect_inputs, main, output_stems, overwrite_clashes
from ovseg.utils.image import rgb2id

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml"
EXAMPLES = ROOT / "demo" / "examples"
# A smaller test size than the config's 200 keeps each run to a second or two on a CPU; outputs
# still come back at the input's resolution.
SMALL = ["model.test.min_size=64", "model.test.max_size=128"]
VOCAB = "person, woman; cat, kitten; cup, mug; table [stuff]; wall [stuff]; sky [stuff]"


def _segmenter_available() -> bool:
    try:
        from ovseg import Segmenter  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return TINY.is_file()


needs_model = pytest.mark.skipif(
    not _segmenter_available(), reason="ovseg.Segmenter or configs/tests/fcclip_tiny.yaml missing"
)


def _small_copy(src: Path, dst: Path, width: int) -> tuple[int, int]:
    im = Image.open(src)
    im = im.resize((width, round(im.height * width / im.width)), Image.BILINEAR)
    im.save(dst)
    return im.height, im.width


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A folder with two good images and one corrupt file, run once through main()."""
    src = tmp_path_factory.mktemp("in")
    sizes = {
        "cat": _small_copy(EXAMPLES / "chelsea.jpg", src / "cat.jpg", 120),
        "cup": _small_copy(EXAMPLES / "coffee.jpg", src / "cup.png", 96),
    }
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    (src / "notes.txt").write_text("not an image, and not picked up from a folder")
    out = tmp_path_factory.mktemp("out") / "nested" / "dir"  # created by the demo
    return src, out, sizes


@needs_model
def test_folder_with_a_corrupt_image(folder_run, capsys):
    src, out, sizes = folder_run
    rc = main(
        ["--config", str(TINY), "--input", str(src), "--vocab", VOCAB, "--task", "panoptic",
         "--output", str(out), "--device", "cpu", "--opts", *SMALL]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1  # one image failed
    bad = str(src / "broken.jpg")
    assert f"error: cannot read image {bad}: corrupt or truncated data" in err
    assert "1 image(s) failed" in err and "wrote 2 of 3" in err
    assert not list(out.glob("broken*"))
    assert "notes" not in err

    for stem, (h, w) in sizes.items():
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.format == "PNG" and overlay.mode == "RGB"
        assert overlay.width > w and overlay.height >= h  # image + legend panel
        ids = rgb2id(np.asarray(Image.open(out / f"{stem}_panoptic.png").convert("RGB")))
        assert ids.shape == (h, w)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image"] == str(src / f"{stem}.{'jpg' if stem == 'cat' else 'png'}")
        assert record["image_size"] == [h, w]
        assert record["task"] == "panoptic"
        assert [v["name"] for v in record["vocabulary"]] == [s.strip() for s in VOCAB.replace(
            " [stuff]", "").split(";")]  # fmt: skip
        assert record["label_map"]["file"] == f"{stem}_panoptic.png"
        # Every segment of the JSON is in the id map, with its area and box.
        assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in record["segments"]}
        for s in record["segments"]:
            ys, xs = np.nonzero(ids == s["id"])
            assert s["area"] == len(ys) > 0
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert 0 <= s["category_id"] < 6 and isinstance(s["score"], float)
            assert s["label"] == record["vocabulary"][s["category_id"]]["name"].split(",")[0]


@needs_model
@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_single_image_other_tasks(task, tmp_path, capsys):
    img = tmp_path / "astro.png"
    h, w = _small_copy(EXAMPLES / "astronaut.jpg", img, 64)
    out = tmp_path / "out"
    rc = main(
        ["--config", str(TINY), "--input", str(img), "--vocab", VOCAB, "--task", task,
         "--score-threshold", "0", "--output", str(out), "--device", "cpu", "--opts", *SMALL]
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    labels = Image.open(out / f"astro_{task}.png")
    arr = np.asarray(labels)
    assert arr.shape == (h, w)
    record = json.loads((out / "astro.json").read_text())
    if task == "semantic":
        assert labels.mode == "L" and arr.max() < 6  # class indices
        assert sorted(np.unique(arr).tolist()) == [s["category_id"] for s in record["segments"]]
        assert sum(s["area"] for s in record["segments"]) == h * w
    else:
        assert labels.mode.startswith("I;16")  # 16-bit instance ids
        assert record["score_threshold"] == 0.0
        assert [s["id"] for s in record["segments"]] == list(range(1, len(record["segments"]) + 1))
        scores = [s["score"] for s in record["segments"]]
        assert scores == sorted(scores, reverse=True) and len(scores) > 0
        assert set(np.unique(arr).tolist()) <= {0, *(s["id"] for s in record["segments"])}
    assert Image.open(out / "astro_overlay.png").width > w
    assert img.read_bytes()  # the input is untouched


@needs_model
def test_slide_mode(tmp_path, capsys):
    img = tmp_path / "astro.png"
    h, w = _small_copy(EXAMPLES / "astronaut.jpg", img, 64)
    slide = [*SMALL, "model.test.mode=slide", "model.test.crop_size=[48,48]",
             "model.test.stride=[32,32]"]  # fmt: skip
    argv = ["--config", str(TINY), "--input", str(img), "--vocab", VOCAB, "--device", "cpu",
            "--output", str(tmp_path / "out"), "--opts", *slide]  # fmt: skip
    assert main(argv) == 2  # the default task is panoptic: refused once, up front
    assert "semantic task only; got --task panoptic" in capsys.readouterr().err
    assert main([*argv, "--task", "semantic"]) == 0
    assert np.asarray(Image.open(tmp_path / "out" / "astro_semantic.png")).shape == (h, w)


# ------------------------------------------------------------------- no model needed below
def test_usage_errors(tmp_path, capsys):
    img = EXAMPLES / "coffee.jpg"
    with pytest.raises(SystemExit) as e:  # no vocabulary flag
        main(["--config", str(TINY), "--input", str(img), "--output", str(tmp_path)])
    assert e.value.code == 2
    with pytest.raises(SystemExit):  # --weights only with --config
        main(["--model", "m.pth", "--weights", "w.pth", "--input", str(img), "--vocab", "cat",
              "--output", str(tmp_path)])  # fmt: skip
    assert "--weights goes with --config" in capsys.readouterr().err

    rc = main(["--config", str(TINY), "--input", str(img), "--dataset-vocab", "ade20k-15O",
               "--output", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "bad vocabulary" in err and "did you mean 'ade20k-150'" in err

    rc = main(["--config", str(TINY), "--input", str(img), "--vocab", "cat; ; cat",
               "--output", str(tmp_path)])  # fmt: skip
    assert rc == 2 and "duplicates class 0" in capsys.readouterr().err

    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["--config", str(TINY), "--input", str(empty), str(tmp_path / "*.webp"),
               "--vocab", "cat", "--output", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "no images in this folder" in err and "no image matches" in err
    assert "no input images" in err
    assert not (tmp_path / "o").exists()  # nothing to do: nothing created


def test_collect_inputs(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "a.PNG").write_bytes(b"x")
    (tmp_path / "a_overlay.png").write_bytes(b"x")  # a previous run's output in the same folder
    (tmp_path / "a_panoptic.png").write_bytes(b"x")
    (tmp_path / "readme.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    explicit = tmp_path / "missing.jpg"
    images, problems = collect_inputs(
        [str(tmp_path), str(tmp_path / "sub" / "*.jpg"), str(tmp_path / "b.jpg"), str(explicit)],
        output_dir=tmp_path,
    )
    names = [p.name for p in images]
    # Sorted folder listing without the demo's own outputs, no duplicates, the missing file kept
    # (it is reported as a failure when read, with the other bad images).
    assert names == ["a.PNG", "b.jpg", "c.jpg", "missing.jpg"]
    assert problems == []
    # In another output folder, files named like outputs are ordinary inputs.
    images, _ = collect_inputs([str(tmp_path)], output_dir=tmp_path / "elsewhere")
    assert [p.name for p in images] == ["a.PNG", "a_overlay.png", "a_panoptic.png", "b.jpg"]


def test_output_stems_never_collide():
    paths = [Path("x/a.jpg"), Path("x/a.png"), Path("y/a.jpg"), Path("x/b.jpg")]
    assert output_stems(paths) == ["a_jpg", "a_png", "a_jpg_2", "b"]


def test_outputs_never_overwrite_an_input(tmp_path):
    images = [tmp_path / "a.jpg", tmp_path / "a_overlay.png", tmp_path / "b.jpg"]
    stems = output_stems(images)
    assert overwrite_clashes(images, stems, tmp_path, "panoptic") == {
        images[0]: tmp_path / "a_overlay.png"
    }
    assert overwrite_clashes(images, stems, tmp_path / "out", "panoptic") == {}


def test_vocabulary_flags(tmp_path):
    from ovseg.cli.demo import build_parser, load_vocabulary

    base = ["--config", str(TINY), "--input", "x.jpg", "--output", str(tmp_path)]
    v = load_vocabulary(build_parser().parse_args([*base, "--vocab", VOCAB]))
    assert v.names == ["person", "cat", "cup", "table", "wall", "sky"]
    assert v.isthing == [True, True, True, False, False, False]
    assert v.synonyms[2] == ("cup", "mug")
    f = tmp_path / "classes.txt"
    f.write_text("zebra, zebras\ndry grass [stuff]\n")
    v = load_vocabulary(build_parser().parse_args([*base, "--vocab-file", str(f)]))
    assert v.names == ["zebra", "dry grass"] and v.isthing == [True, False]
    v = load_vocabulary(build_parser().parse_args([*base, "--dataset-vocab", "ade20k-150"]))
    assert len(v) == 150


def test_descriptions_flag(tmp_path, capsys):
    img = EXAMPLES / "coffee.jpg"
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"cup": ["A small round container for coffee."]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cpu": ["A small round container for coffee."]}))
    base = ["--config", str(TINY), "--input", str(img), "--vocab", "cup; table [stuff]"]
    rc = main([*base, "--descriptions", str(bad), "--output", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2 and "key 'cpu' matches no class" in err and "did you mean 'cup'" in err
    assert main([*base, "--descriptions", str(good), "--output", str(tmp_path / "b")]) == 0
    rows = json.loads((tmp_path / "b" / "coffee.json").read_text())
    assert rows["task"] == "panoptic"


def test_output_folder_is_made_after_the_model_and_its_failure_is_one_line(tmp_path, capsys):
    """Issue 18, case 12: a failed set-up leaves no empty output folder; an output folder that
    cannot be created is exit 2 with one line; random weights are said."""
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(img)
    out = tmp_path / "never"
    rc = main(["--config", str(TINY), "--weights", str(tmp_path / "no.pth"), "--input", str(img),
               "--vocab", "cat", "--output", str(out)])  # fmt: skip
    assert rc == 2 and not out.exists()
    assert "could not set up the model" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["--config", str(TINY), "--input", str(img), "--vocab", "cat",
               "--output", str(blocker / "sub"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"cannot create --output {blocker / 'sub'}" in err
    assert "RANDOM weights" in err and "Traceback" not in err
