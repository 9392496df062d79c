"""OVCamo's release layout (Pang et al., ECCV 2024; github.com/lartpang/OVCamo): the
``splitted_ovcamo.yaml`` env file, ``class_info.json`` (``[{name, split}]``) and
``sample_info.json`` (``[{unique_id, base_class, image, mask}]``); files on disk are
``<unique_id>`` + the suffix of the ``image`` / ``mask`` field. Read here; scored by
:mod:`ovseg.evaluation.ovcamo`; converted by ``tools/prepare_data.py ovcamo``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INFO_KEYS = (
    "OVCamo_CLASS_JSON_PATH",
    "OVCamo_SAMPLE_JSON_PATH",
    "OVCamo_TE_IMAGE_DIR",
    "OVCamo_TE_MASK_DIR",
)


class OVCamoLayoutError(ValueError):
    """A bad OVCamo info file or layout; the message names the file and the key at fault."""


@dataclass(frozen=True)
class OVCamoSample:
    """One image of the OVCamo release: ``unique_id``, its class and the files on disk."""

    unique_id: str
    base_class: str
    image_path: str
    mask_path: str

    @property
    def mask_name(self) -> str:
        """``<unique_id><mask suffix>``: what a prediction file names after ``[<class>]``."""
        return os.path.basename(self.mask_path)


@dataclass
class OVCamoInfo:
    """The resolved ``splitted_ovcamo.yaml``: class lists and per-split samples."""

    yaml_path: str
    test_classes: list[str]
    train_classes: list[str]
    test_samples: list[OVCamoSample] = field(default_factory=list)
    train_samples: list[OVCamoSample] = field(default_factory=list)


def _resolve(value: str, key: str, yaml_path: Path) -> str:
    """OVCamo's evaluate.py opens yaml paths from the working directory; we also accept them
    relative to the yaml's folder (so the fixture works from anywhere)."""
    p = Path(os.path.expanduser(str(value)))
    if p.is_absolute() or p.exists():
        return str(p)
    beside = yaml_path.parent / p
    if beside.exists():
        return str(beside)
    raise OVCamoLayoutError(
        f"{yaml_path}: {key}: {value!r} exists neither from the working directory nor beside the "
        "yaml; fix the path"
    )


def _load_json_list(path: str, what: str, keys: Iterable[str]) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise OVCamoLayoutError(f"cannot read {what} {path}: {e}") from None
    if not isinstance(data, list):
        raise OVCamoLayoutError(f"{path}: expected a JSON list of {what} entries")
    for i, item in enumerate(data):
        missing = [k for k in keys if not isinstance(item, dict) or k not in item]
        if missing:
            raise OVCamoLayoutError(f"{path}: entry {i} lacks {', '.join(missing)}")
    return data


def load_ovcamo_info(yaml_path: str | os.PathLike) -> OVCamoInfo:
    """Read OVCamo's ``splitted_ovcamo.yaml`` env file and the two JSON files it names.

    Files on disk are ``<unique_id>`` + the suffix of each sample's ``image`` / ``mask`` field
    (as in OVCamo's evaluate.py and dataset code). Train dirs are optional (evaluation needs only
    the test split).

    Raises:
        OVCamoLayoutError: unreadable yaml, a missing key, a path that does not exist, malformed
            JSON; the message names the file.
    """
    import yaml

    ypath = Path(yaml_path)
    try:
        with open(ypath, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise OVCamoLayoutError(f"cannot read OVCamo info file {ypath}: {e}") from None
    if not isinstance(cfg, dict):
        raise OVCamoLayoutError(f"{ypath}: expected a mapping of OVCamo_* keys")
    missing = [k for k in INFO_KEYS if k not in cfg]
    if missing:
        raise OVCamoLayoutError(f"{ypath}: missing key(s) {', '.join(missing)}")
    paths = {k: _resolve(cfg[k], k, ypath) for k in INFO_KEYS}
    train_dirs = {}
    for k in ("OVCamo_TR_IMAGE_DIR", "OVCamo_TR_MASK_DIR"):
        if k in cfg:
            try:
                train_dirs[k] = _resolve(cfg[k], k, ypath)
            except OVCamoLayoutError:
                train_dirs[k] = None
    classes = _load_json_list(paths["OVCamo_CLASS_JSON_PATH"], "class_info", ("name", "split"))
    samples = _load_json_list(
        paths["OVCamo_SAMPLE_JSON_PATH"],
        "sample_info",
        ("unique_id", "base_class", "image", "mask"),
    )
    test = [c["name"] for c in classes if c["split"] == "test"]
    train = [c["name"] for c in classes if c["split"] == "train"]
    info = OVCamoInfo(str(ypath), test, train)
    test_set, train_set = set(test), set(train)
    for s in samples:
        uid = s["unique_id"]
        img_sfx = os.path.splitext(s["image"])[1]
        msk_sfx = os.path.splitext(s["mask"])[1]
        if s["base_class"] in test_set:
            img_dir, msk_dir, out = (
                paths["OVCamo_TE_IMAGE_DIR"],
                paths["OVCamo_TE_MASK_DIR"],
                info.test_samples,
            )
        elif s["base_class"] in train_set and train_dirs.get("OVCamo_TR_MASK_DIR"):
            img_dir = train_dirs.get("OVCamo_TR_IMAGE_DIR") or ""
            msk_dir, out = train_dirs["OVCamo_TR_MASK_DIR"], info.train_samples
        else:
            continue
        out.append(
            OVCamoSample(
                uid,
                s["base_class"],
                os.path.join(img_dir, uid + img_sfx),
                os.path.join(msk_dir, uid + msk_sfx),
            )
        )
    return info


def ovcamo_info_path(root: str | os.PathLike | None = None) -> Path:
    """``<data root>/ovcamo/splitted_ovcamo.yaml`` (data root: ``root``, ``$OVSEG_DATA`` or
    ``./data``), or ``root`` itself when it is a yaml file."""
    from ovseg.utils.paths import data_root

    if root is not None and str(root).endswith((".yaml", ".yml")):
        return Path(root)
    return data_root(root) / "ovcamo" / "splitted_ovcamo.yaml"


# The official release (OVCamo README): 11,483 images, 14 train + 61 test classes.
OFFICIAL_COUNTS = {"images": 11483, "train_classes": 14, "test_classes": 61}


def _find_info(src: Path) -> Path:
    if src.is_file():
        return src
    for cand in ("splitted_ovcamo.yaml", "env/splitted_ovcamo.yaml", "OVCamo/splitted_ovcamo.yaml"):
        if (src / cand).is_file():
            return src / cand
    raise OVCamoLayoutError(
        f"no splitted_ovcamo.yaml under {src}: point --src at OVCamo's env file (env/"
        "splitted_ovcamo.yaml, with OVCamo_* keys) or the folder holding it"
    )


def prepare_ovcamo(src: str | os.PathLike, dst: str | os.PathLike, link: bool = False) -> Path:
    """Copy (or symlink) an OVCamo release into ``dst/ovcamo``: ``{train,test}/{image,mask}``,
    ``class_info.json``, ``sample_info.json`` and a ``splitted_ovcamo.yaml`` with relative paths.

    Args:
        src: the release's ``splitted_ovcamo.yaml`` or a folder holding it.
        dst: the data root; writes ``dst/ovcamo``.

    Returns:
        the written yaml.

    Raises:
        OVCamoLayoutError: bad yaml / JSON, or a sample's file missing (named).
    """
    import shutil

    from ovseg.utils.io import atomic_write_text

    info = load_ovcamo_info(_find_info(Path(src)))
    out = Path(dst) / "ovcamo"
    for split, samples in (("test", info.test_samples), ("train", info.train_samples)):
        for s in samples:
            for kind, path in (("image", s.image_path), ("mask", s.mask_path)):
                if not os.path.isfile(path):
                    raise OVCamoLayoutError(f"OVCamo {split} {kind} {path} is missing")
                target = out / split / kind / os.path.basename(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists() or target.is_symlink():
                    target.unlink()
                if link:
                    target.symlink_to(os.path.abspath(path))
                else:
                    shutil.copy2(path, target)
    ypath = Path(info.yaml_path)
    with open(ypath, encoding="utf-8") as f:
        import yaml

        cfg = yaml.safe_load(f)
    for key, name in (("OVCamo_CLASS_JSON_PATH", "class_info.json"),
                      ("OVCamo_SAMPLE_JSON_PATH", "sample_info.json")):  # fmt: skip
        shutil.copy2(_resolve(cfg[key], key, ypath), out / name)
    text = (
        "# written by tools/prepare_data.py ovcamo; paths relative to this file's folder\n"
        "OVCamo_TR_IMAGE_DIR: train/image\nOVCamo_TR_MASK_DIR: train/mask\n"
        "OVCamo_TE_IMAGE_DIR: test/image\nOVCamo_TE_MASK_DIR: test/mask\n"
        "OVCamo_CLASS_JSON_PATH: class_info.json\nOVCamo_SAMPLE_JSON_PATH: sample_info.json\n"
    )
    for split in ("train", "test"):
        for kind in ("image", "mask"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "splitted_ovcamo.yaml", text)
    # The test vocabulary (61 classes in the release), from the release's own class_info.json:
    # `--vocab-file <dst>/ovcamo/test_classes.txt` for the demo, the app or tools/label.py.
    atomic_write_text(out / "test_classes.txt", "".join(f"{n}\n" for n in info.test_classes))
    write_train_labels(info, out)
    return out / "splitted_ovcamo.yaml"


def write_train_labels(info: OVCamoInfo, out: Path) -> Path:
    """Training labels for the ``semantic_folder`` dataset: ``out/train/label/<uid>.png`` holds
    the image's class index (in the train vocabulary) where the mask is ``> 0`` and 255 (ignore)
    elsewhere (background is no class in OVCamo); ``out/train_classes.txt`` the train classes.

    Returns:
        the class file.
    """
    import cv2
    import numpy as np

    from ovseg.utils.image import save_label_png
    from ovseg.utils.io import atomic_write_text

    index = {n: i for i, n in enumerate(info.train_classes)}
    (out / "train" / "label").mkdir(parents=True, exist_ok=True)
    for s in info.train_samples:
        msk = cv2.imread(os.path.join(out, "train", "mask", os.path.basename(s.mask_path)), 0)
        if msk is None:
            raise OVCamoLayoutError(f"cannot read OVCamo train mask {s.mask_path}")
        label = np.where(msk > 0, index[s.base_class], 255).astype(np.uint8)
        save_label_png(out / "train" / "label" / f"{s.unique_id}.png", label)
    classes = out / "train_classes.txt"
    atomic_write_text(classes, "".join(f"{n}\n" for n in info.train_classes))
    return classes


def verify_ovcamo(root: str | os.PathLike | None = None, max_listed: int = 5) -> list[str]:
    """Check a prepared OVCamo: every sample's image and mask exist and read, sizes agree,
    masks are 0/255; class and image counts against the official release.

    Returns:
        report lines, ``"ok   ..."`` / ``"FAIL ..."`` / ``"note ..."``.
    """
    import cv2

    lines: list[str] = []
    try:
        info = load_ovcamo_info(ovcamo_info_path(root))
    except OVCamoLayoutError as e:
        return [f"FAIL {e}"]
    for split, samples in (("test", info.test_samples), ("train", info.train_samples)):
        bad: list[str] = []
        for s in samples:
            img = (
                cv2.imread(s.image_path, cv2.IMREAD_COLOR) if os.path.isfile(s.image_path) else None
            )
            msk = (
                cv2.imread(s.mask_path, cv2.IMREAD_GRAYSCALE)
                if os.path.isfile(s.mask_path)
                else None
            )
            if img is None or msk is None:
                bad.append(f"{s.image_path if img is None else s.mask_path} (unreadable)")
            elif img.shape[:2] != msk.shape:
                bad.append(f"{s.mask_path} (size {msk.shape} != image {img.shape[:2]})")
            elif not np_isin_binary(msk):
                bad.append(f"{s.mask_path} (values other than 0/255)")
        if bad:
            lines.append(f"FAIL {split}: {len(bad)} bad samples: {', '.join(bad[:max_listed])}")
        else:
            lines.append(f"ok   {split}: {len(samples)} samples, images and masks readable")
    n = len(info.test_samples) + len(info.train_samples)
    official = OFFICIAL_COUNTS
    same = (n, len(info.train_classes), len(info.test_classes)) == (
        official["images"], official["train_classes"], official["test_classes"])  # fmt: skip
    lines.append(
        f"{'ok  ' if same else 'note'} {n} images, {len(info.train_classes)} train / "
        f"{len(info.test_classes)} test classes (official release: {official['images']}, "
        f"{official['train_classes']} / {official['test_classes']})"
    )
    return lines


def np_isin_binary(mask: Any) -> bool:
    """True when an (H, W) uint8 mask holds only 0 and 255."""
    import numpy as np

    return bool(np.isin(mask, (0, 255)).all())
