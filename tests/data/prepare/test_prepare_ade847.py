"""ADE20K-847 from a tiny synthetic full ADE20K release in the real on-disk format: a pickled
``index_ade20k.pkl`` dict, ``images/ADE/<split>/<scene>/*.jpg`` and ``*_seg.png`` whose class is
``R // 10 * 256 + G`` (1-based in ``objectnames``)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ovseg.cli.prepare_data import main
from ovseg.data.benchmarks import load_benchmark
from ovseg.data.prepare import PrepareError, prepare, verify
from ovseg.data.prepare.ade20k_full import derive_mapping, fcclip_size
from ovseg.text.vocabulary import Vocabulary

VOCAB = Vocabulary.from_name("ade20k-847")
RELEASE = "ADE20K_2021_17_01"
# Class -> ADE name overrides that exercise the weaker matching rules: "sea, ocean" is written
# "ocean, sea" (canonical is ADE's second name), "work surface" is written "surface" (ADE's name
# inside the class name).
SEA, WORK_SURFACE = 22, 42
OVERRIDES = {SEA: "ocean, sea", WORK_SURFACE: "surface"}
NOT_IN_847 = ["housing", "knob, door knob", "zz unlabelled scribble"]


def _ade_objectnames(seed: int = 0) -> tuple[list[str], dict[int, int]]:
    """ADE-style names: each class as "canonical, second synonym", shuffled among objects that
    are not among the 847. Returns (objectnames, pixel value -> train id)."""
    names = []
    for k, c in enumerate(VOCAB):
        names.append(OVERRIDES.get(k, ", ".join(c.synonyms[:2])))
    names += NOT_IN_847
    order = np.random.default_rng(seed).permutation(len(names))
    objectnames = [names[i] for i in order]
    value_to_train = {int(pos) + 1: int(i) for pos, i in enumerate(order) if i < len(VOCAB)}
    return objectnames, value_to_train


def _encode_seg(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """ADE's _seg.png: R = class // 256 * 10 (+ 0..9, dropped by the // 10), G = class % 256,
    B = instance."""
    r = values // 256 * 10 + rng.integers(0, 10, values.shape)
    g = values % 256
    b = rng.integers(0, 255, values.shape)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def _make_release(src: Path, objectnames: list[str]) -> dict[str, np.ndarray]:
    """Three images: a small and a large (600 x 800, resized) validation image and a training
    image that must be skipped. Returns file name -> class value map."""
    rng = np.random.default_rng(0)
    base = src / RELEASE
    value_of = {n: j + 1 for j, n in enumerate(objectnames)}
    useful = [value_of[n] for n in objectnames if n not in NOT_IN_847]
    others = [value_of[n] for n in NOT_IN_847]
    specs = [
        ("ADE_val_00000001.jpg", "validation/urban/street", (40, 56)),
        ("ADE_val_00000002.jpg", "validation/home_or_hotel/bedroom", (600, 800)),
        ("ADE_train_00000001.jpg", "training/urban/street", (30, 30)),
    ]
    maps, filenames, folders = {}, [], []
    for name, sub, (h, w) in specs:
        folder = f"{RELEASE}/images/ADE/{sub}"
        (src / folder).mkdir(parents=True, exist_ok=True)
        # blocks of classes (values above 255 exercise the R channel), some unlabelled (0) and
        # some objects that are not among the 847
        cells = rng.choice(useful, size=(6, 8))
        cells[0, 0], cells[1, 1], cells[2, 2] = 0, others[0], others[1]
        cells[3, 3] = max(useful)
        ys = np.minimum(np.arange(h) * 6 // h, 5)
        xs = np.minimum(np.arange(w) * 8 // w, 7)
        values = cells[ys[:, None], xs[None, :]].astype(np.int64)
        values[h // 2, :] = rng.choice(useful, size=w)  # one-pixel stripes for the resize
        values[:, w // 3] = rng.choice(useful, size=h)
        maps[name] = values
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(src / folder / name, quality=95)
        Image.fromarray(_encode_seg(values, rng)).save(
            src / folder / name.replace(".jpg", "_seg.png")
        )
        filenames.append(name)
        folders.append(folder)
    index = {
        "filename": filenames,
        "folder": folders,
        "scene": ["/street", "/bedroom", "/street"],
        "objectnames": objectnames,
        "objectPresence": np.zeros((len(objectnames), len(filenames)), np.int64),
        "objectcounts": np.zeros(len(objectnames), np.int64),
        "description": {"filename": "array of length N=3 with the image file names"},
    }
    with open(base / "index_ade20k.pkl", "wb") as f:
        pickle.dump(index, f)
    return maps


def _fcclip_reference(image_path: Path, seg_path: Path, value_to_train: dict[int, int]):
    """What FC-CLIP's prepare_ade20k_full_sem_seg.py does to one image, written independently of
    ovseg's converter (per-id loop, float R / 10): (JPEG bytes, uint16 labels)."""
    img = np.asarray(Image.open(image_path))
    seg = np.array(Image.open(seg_path))
    lab = (seg[:, :, 0] / 10).astype(np.int32) * 256 + seg[:, :, 1].astype(np.int32)
    h, w = img.shape[:2]
    if min(h, w) > 512:
        nh, nw = (512, round(w / h * 512)) if w >= h else (round(h / w * 512), 512)
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        lab = cv2.resize(lab, (nw, nh), interpolation=cv2.INTER_NEAREST)
    out = np.full(lab.shape, 65535, np.uint16)
    for v in np.unique(lab):
        if int(v) in value_to_train:
            out[lab == v] = value_to_train[int(v)]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG")
    return buf.getvalue(), out


def _expected_labels(values: np.ndarray, value_to_train: dict[int, int]) -> np.ndarray:
    """Independent expectation: nearest neighbour = floor(dst * src / dst_size) index picking."""
    h, w = values.shape
    size = (512, round(w / h * 512)) if min(h, w) > 512 else (h, w)
    rows = np.minimum(np.floor(np.arange(size[0]) * (h / size[0])).astype(int), h - 1)
    cols = np.minimum(np.floor(np.arange(size[1]) * (w / size[1])).astype(int), w - 1)
    picked = values[rows[:, None], cols[None, :]]
    lut = np.full(int(values.max()) + 1, 65535, np.uint16)
    for v, t in value_to_train.items():
        if v < len(lut):
            lut[v] = t
    return lut[picked]


@pytest.fixture()
def release(tmp_path):
    objectnames, value_to_train = _ade_objectnames()
    maps = _make_release(tmp_path / "raw", objectnames)
    return tmp_path / "raw", objectnames, value_to_train, maps


def test_converts_validation_like_fcclip(release, tmp_path):
    src, objectnames, value_to_train, maps = release
    assert prepare("ade20k-847", src, tmp_path / "data") == ["ade20k-847"]
    out = tmp_path / "data" / RELEASE
    images = sorted(p.name for p in (out / "images_detectron2" / "validation").iterdir())
    labels = sorted(p.name for p in (out / "annotations_detectron2" / "validation").iterdir())
    assert images == ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]  # training skipped
    assert labels == ["ADE_val_00000001.tif", "ADE_val_00000002.tif"]
    assert not (out / "images_detectron2" / "training").exists()
    for stem, size in (("ADE_val_00000001", (40, 56)), ("ADE_val_00000002", (512, 683))):
        lab = np.asarray(Image.open(out / "annotations_detectron2" / "validation" / f"{stem}.tif"))
        assert lab.dtype == np.uint16 and lab.shape == size
        expected = _expected_labels(maps[f"{stem}.jpg"], value_to_train)
        np.testing.assert_array_equal(lab, expected)
        assert lab[0, 0] == 65535  # unlabelled and objects outside the 847
        assert (lab == 65535).sum() < lab.size and (lab < 847).any()
        with Image.open(out / "images_detectron2" / "validation" / f"{stem}.jpg") as im:
            assert (im.height, im.width) == size and im.format == "JPEG"
        # byte-identical to an independent rendition of FC-CLIP's script
        folder = src / RELEASE / "images/ADE/validation"
        raw = next(folder.rglob(f"{stem}.jpg"))
        ref_jpg, ref_lab = _fcclip_reference(raw, raw.with_name(f"{stem}_seg.png"), value_to_train)
        np.testing.assert_array_equal(lab, ref_lab)
        assert (out / "images_detectron2" / "validation" / f"{stem}.jpg").read_bytes() == ref_jpg
    assert fcclip_size(600, 800) == (512, 683) and fcclip_size(512, 900) is None
    assert fcclip_size(1000, 700) == (731, 512) and fcclip_size(513, 513) == (512, 512)

    # the mapping actually used, for audit
    doc = json.loads((out / "ade20k_847_mapping.json").read_text())
    assert len(doc["classes"]) == 847 and doc["num_classes"] == 847
    train_of_value = {c["ade_index"]: c["train_id"] for c in doc["classes"]}
    assert train_of_value == value_to_train
    for c in doc["classes"]:
        assert objectnames[c["ade_index"] - 1] == c["ade_name"]
    rules = {c["train_id"]: c["rule"] for c in doc["classes"]}
    assert rules[SEA] == "canonical is an ADE name"
    assert rules[WORK_SURFACE] == "ADE first name inside a synonym"
    assert rules[0] == "first name"

    bench = load_benchmark("ade20k-847", tmp_path / "data")
    assert len(bench) == 2 and bench.ignore_index == 65535
    report = verify("ade20k-847", tmp_path / "data", expected={"ade20k-847": 2})
    assert report.ok, report.text()


def test_derived_mapping_rules():
    objectnames, value_to_train = _ade_objectnames(seed=3)
    got = {m.ade_index: m.train_id for m in derive_mapping(objectnames, VOCAB)}
    assert got == value_to_train
    # classes that share a canonical name go to the object they match best
    matches = derive_mapping(objectnames, VOCAB)
    pots = {m.train_id: m.ade_name for m in matches if m.name == "pot"}
    assert pots == {130: "pot, flowerpot", 188: "pot"}


def test_training_and_link(release, tmp_path):
    src, *_ = release
    assert prepare("ade20k-847", src, tmp_path / "d", link=True, training=True) == ["ade20k-847"]
    out = tmp_path / "d" / RELEASE / "images_detectron2"
    assert (out / "training" / "ADE_train_00000001.jpg").is_file()
    assert (out / "validation" / "ADE_val_00000001.jpg").is_symlink()  # needs no resize
    assert not (out / "validation" / "ADE_val_00000002.jpg").is_symlink()  # resized: written


def test_mapping_override(release, tmp_path):
    src, objectnames, value_to_train, maps = release
    train_to_name = {t: objectnames[v - 1] for v, t in value_to_train.items()}
    names = [train_to_name[k] for k in range(847)]
    names[0], names[1] = names[1], names[0]  # swap wall and building
    mapping = tmp_path / "swap.json"
    mapping.write_text(json.dumps(names))
    assert prepare("ade20k-847", src, tmp_path / "d", mapping=mapping) == ["ade20k-847"]
    out = tmp_path / "d" / RELEASE
    swapped = dict(value_to_train)
    for v, t in value_to_train.items():
        if t in (0, 1):
            swapped[v] = 1 - t
    lab = np.asarray(Image.open(out / "annotations_detectron2/validation/ADE_val_00000001.tif"))
    np.testing.assert_array_equal(lab, _expected_labels(maps["ADE_val_00000001.jpg"], swapped))
    doc = json.loads((out / "ade20k_847_mapping.json").read_text())
    assert doc["classes"][0]["ade_name"] == train_to_name[1]
    assert doc["classes"][0]["rule"] == "from swap.json"

    # the written file and the {name: train id} form read back to the same mapping
    as_dict = tmp_path / "dict.json"
    as_dict.write_text(json.dumps({n: k for k, n in enumerate(names)}))
    for path in (out / "ade20k_847_mapping.json", as_dict):
        prepare("ade20k-847", src, tmp_path / "d2", mapping=path)
        tif = tmp_path / "d2" / RELEASE / "annotations_detectron2/validation/ADE_val_00000001.tif"
        lab2 = np.asarray(Image.open(tif))
        np.testing.assert_array_equal(lab2, lab)


def _error(src: Path, dst: Path, **kwargs) -> str:
    with pytest.raises(PrepareError) as e:
        prepare("ade20k-847", src, dst, **kwargs)
    return str(e.value)


def test_bad_input(release, tmp_path):
    src, objectnames, value_to_train, _ = release
    base = src / RELEASE
    index_path = base / "index_ade20k.pkl"
    index = pickle.loads(index_path.read_bytes())
    dst = tmp_path / "d"

    # no index at all
    (tmp_path / "empty").mkdir()
    msg = _error(tmp_path / "empty", dst)
    assert "index_ade20k.pkl not found" in msg and "groups.csail.mit.edu" in msg

    # a _seg.png missing for an indexed image
    seg = next(base.rglob("ADE_val_00000002_seg.png"))
    seg.rename(seg.with_suffix(".bak"))
    msg = _error(src, dst)
    assert "ADE_val_00000002_seg.png" in msg and "missing" in msg
    seg.with_suffix(".bak").rename(seg)

    # malformed pickles
    index_path.write_bytes(b"this is not a pickle")
    msg = _error(src, dst)
    assert str(index_path) in msg and "not a readable index_ade20k.pkl" in msg
    index_path.write_bytes(pickle.dumps([1, 2, 3]))
    assert "holds a list, expected the ADE20K index dict" in _error(src, dst)
    index_path.write_bytes(pickle.dumps({k: v for k, v in index.items() if k != "objectnames"}))
    assert "has no 'objectnames'" in _error(src, dst)

    # a class no ADE object name matches
    names = list(objectnames)
    names[names.index(", ".join(VOCAB[7].synonyms[:2]))] = "zz renamed"
    index_path.write_bytes(pickle.dumps({**index, "objectnames": names}))
    msg = _error(src, dst)
    assert "cannot match 1 of the 847 classes" in msg and "class 7 'bed, beds'" in msg
    assert "--mapping" in msg

    # an unresolvable tie: two objects with the same name
    index_path.write_bytes(pickle.dumps({**index, "objectnames": [*objectnames, "bed, beds"]}))
    msg = _error(src, dst)
    assert "class 7 'bed': equally good ADE objects 'bed, beds'" in msg

    # bad --mapping files
    index_path.write_bytes(pickle.dumps(index))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"no such object": 3}))
    assert "'no such object' is not in the objectnames" in _error(src, dst, mapping=bad)
    bad.write_text(json.dumps(["wall"]))
    assert "must hold 847 ADE object names, it has 1" in _error(src, dst, mapping=bad)
    bad.write_text("{not json")
    assert "is not valid JSON" in _error(src, dst, mapping=bad)
    train_to_name = {t: objectnames[v - 1] for v, t in value_to_train.items()}
    bad.write_text(json.dumps({train_to_name[k]: k for k in range(846)}))
    assert "1 train id(s) have no ADE object: 846 'adding machine'" in _error(src, dst, mapping=bad)
    assert not (dst / RELEASE / "annotations_detectron2").exists()  # nothing half-written


def test_cli_mapping_training_and_verify(release, tmp_path, capsys):
    src, objectnames, value_to_train, _ = release
    train_to_name = {t: objectnames[v - 1] for v, t in value_to_train.items()}
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps([train_to_name[k] for k in range(847)]))
    argv = ["ade20k-847", "--src", str(src), "--dst", str(tmp_path / "d"), "--verify"]
    assert main([*argv, "--mapping", str(mapping), "--training"]) == 1  # 2 images, not 2,000
    out = capsys.readouterr().out
    assert "wrote ade20k-847" in out and "expected 2000" in out
    assert "ok   ade20k-847: semantic labels in 0..846 (+ 65535)" in out
    assert (
        tmp_path / "d" / RELEASE / "images_detectron2/training/ADE_train_00000001.jpg"
    ).is_file()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main([*argv, "--mapping", str(bad)]) == 2
    assert "must hold 847 ADE object names" in capsys.readouterr().err
    voc = ["pascal-voc", "--src", str(src), "--dst", str(tmp_path / "v"), "--mapping", str(bad)]
    assert main(voc) == 2  # not an option of the VOC converter
    assert "mapping" in capsys.readouterr().err


class _Boom:
    """Unpickling this would call ``pathlib.Path.touch`` on the given file (code execution)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_index_pickle_is_loaded_restricted(tmp_path):
    """Issue 18, case 2: a crafted index_ade20k.pkl cannot run code; the real types load."""
    from ovseg.data.prepare.ade20k_full import load_index
    from ovseg.data.prepare.common import PrepareError

    marker = tmp_path / "executed"
    path = tmp_path / "index_ade20k.pkl"
    payload = {"filename": ["ADE_val_00000001.jpg"], "folder": ["x"], "objectnames": ["wall"],
               "objectPresence": _Boom(marker)}  # fmt: skip
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(PrepareError, match=r"refusing pathlib.*Path"):
        load_index(path)
    assert not marker.exists()
    # numpy arrays, scalars and nested containers (what the release holds) still load
    good = {**payload, "objectPresence": np.zeros((1, 1), np.int64), "n": np.float32(1.5),
            "description": {"filename": ("a", 1, 2.0)}}  # fmt: skip
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(good, protocol=protocol))
        assert load_index(path).objectnames == ["wall"]
