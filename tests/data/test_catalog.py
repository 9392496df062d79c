"""The dataset catalog: every built-in spec is complete, the suite is FC-CLIP's table, unknown
names suggest close ones, and a dataset registered from a test (one spec + registration, no other
edit) runs through ``tools/test.py --dataset NAME`` with the tiny model."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.cli.test import SUITE_COLUMNS, main
from ovseg.data import prepare
from ovseg.data.benchmarks import Benchmark, data_root, load_benchmark
from ovseg.data.benchmarks.base import pair_by_stem, resolve_tasks
from ovseg.data.catalog import DATASETS, TASKS, DatasetSpec, get_spec, register_dataset, suite_specs
from ovseg.data.catalog.cityscapes_labels import INSTANCE_LABELS, LABEL_IDS, VOID_LABEL_IDS
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.registry import RegistryError

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "ovseg" / "configs" / "tests" / "fcclip_tiny.yaml")

# FC-CLIP README zero-shot table, column by column.
FCCLIP_TABLE = [
    ("ADE20K", "ade20k-150", ("PQ", "AP", "mIoU")),
    ("A-847", "ade20k-847", ("mIoU",)),
    ("PC-459", "pascal-context-459", ("mIoU",)),
    ("PC-59", "pascal-context-59", ("mIoU",)),
    ("PAS-21", "pascal-voc-21", ("mIoU",)),
    ("PAS-20", "pascal-voc-20", ("mIoU",)),
    ("Cityscapes", "cityscapes", ("PQ", "AP", "mIoU")),
    ("Mapillary", "mapillary-vistas", ("PQ", "mIoU")),
    ("COCO", "coco-panoptic", ("PQ", "AP", "mIoU")),
]


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_builtin_spec_is_complete(name):
    spec = get_spec(name)
    assert spec.name == name and callable(spec.loader)
    assert spec.tasks and set(spec.tasks) <= set(TASKS)
    assert spec.min_size_test > 0 and spec.max_size_test >= spec.min_size_test
    vocab = Vocabulary.from_name(spec.vocabulary)
    if spec.category_ids is not None:
        assert len(spec.category_ids) == len(vocab)
    assert spec.preparer is not None, f"{name}: tools/prepare_data.py offers a converter"
    assert callable(spec.load_preparer())
    assert spec.converter in prepare.names() and name in prepare.benchmarks_of(spec.converter)
    assert spec.expected_images == prepare.EXPECTED_IMAGES[name]
    assert spec.description and spec.licence


def test_suite_order_is_fcclip_table():
    assert SUITE_COLUMNS == tuple(FCCLIP_TABLE)
    assert [s.name for s in suite_specs()] == [n for _, n, _ in FCCLIP_TABLE]


def test_cityscapes_uses_its_own_instance_evaluator_and_label_table():
    spec = get_spec("cityscapes")
    assert spec.instance_evaluator == "cityscapes"
    assert spec.category_ids == LABEL_IDS == (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25,
                                              26, 27, 28, 31, 32, 33)  # fmt: skip
    assert list(INSTANCE_LABELS) == [24, 25, 26, 27, 28, 31, 32, 33]
    assert VOID_LABEL_IDS == (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, -1)
    assert {get_spec(n).instance_evaluator for n in DATASETS if n != "cityscapes"} == {"coco"}


def test_unknown_dataset_suggests_a_close_name():
    with pytest.raises(RegistryError, match="did you mean 'cityscapes'") as e:
        load_benchmark("cityscape")
    assert "--dataset" in str(e.value)
    assert get_spec("ADE20K_150").name == "ade20k-150"  # case and underscores are forgiven


def test_bad_spec_is_refused_naming_the_dataset():
    with pytest.raises(ValueError, match="'toy'.*instance_evaluator 'lvis'"):
        DatasetSpec("toy", lambda r, t: None, "pascal-voc-20", ("semantic",),
                    instance_evaluator="lvis")  # fmt: skip
    with pytest.raises(ValueError, match="'toy': unknown task"):
        DatasetSpec("toy", lambda r, t: None, "pascal-voc-20", ("depth",))


# ------------------------------------------------------------ a new dataset = one spec + register
TOY = "toy-voc-20"


def load_toy(root: str | os.PathLike | None = None, tasks: Sequence[str] | None = None):
    """The whole reader of the new dataset: Pascal-VOC-20-style semantic folders."""
    root = data_root(root)
    tasks = resolve_tasks(TOY, ("semantic",), tasks)
    base = root / "toy_d2"
    records = pair_by_stem(TOY, root, base / "images", base / "labels", ".jpg", ".png")
    return Benchmark(TOY, "pascal-voc-20", tasks, records, num_classes=20)


@pytest.fixture
def toy_dataset():
    spec = register_dataset(
        DatasetSpec(TOY, load_toy, "pascal-voc-20", ("semantic",), min_size_test=48,
                    max_size_test=64, description="a test's toy set", licence="none")
    )  # fmt: skip
    yield spec
    DATASETS._entries.pop(TOY)  # the registry has no public unregister; tests clean up


def _write_toy(root: Path) -> np.ndarray:
    label = np.full((40, 56), 255, np.uint8)
    label[8:32, 12:44] = 14  # person (VOC-20 index)
    for k in range(2):
        for folder, arr, ext in (
            ("images", np.full((40, 56, 3), 50 + 90 * k, np.uint8), ".jpg"),
            ("labels", label, ".png"),
        ):
            path = root / "toy_d2" / folder / f"img{k}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    return label


def test_registered_dataset_runs_through_tools_test(toy_dataset, tmp_path, monkeypatch):
    _write_toy(tmp_path / "data")
    monkeypatch.setenv("OVSEG_DATA", str(tmp_path / "data"))
    assert TOY not in [s.name for s in suite_specs()]  # not part of FC-CLIP's table

    out = tmp_path / "out"
    assert main([TINY, "--dataset", TOY, "--out", str(out), "--no-progress"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == {"semantic", "meta"}
    assert m["meta"]["dataset"] == TOY
    assert m["meta"]["test_size"] == [48, 64]  # the spec's test size, not the config's
    sem = m["semantic"]
    assert sem["num_images"] == 2 and sem["num_classes"] == 20
    iou = sem["per_class_percent"]["IoU"]
    assert [i for i, v in enumerate(iou) if v is not None] == [14]  # only person has ground truth
    assert 0.0 <= sem["summary_percent"]["mIoU"] <= 100.0

    # an unknown task for it is one line, exit 2
    assert main([TINY, "--dataset", TOY, "--task", "panoptic", "--out", str(out)]) == 2
