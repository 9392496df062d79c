"""A OneFormer (task-conditioned) model's ONNX export carries one task token, traced into its
image graph as a constant: the export records which, answers the requests that use it as
PyTorch does, and refuses the others in one line instead of answering them with the wrong
token (on the trained toy model the panoptic token's sem_seg differs from the semantic one's
by 0.34).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from ovseg_testing import REPO

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ovseg import Segmenter  # noqa: E402
from ovseg.export import export_onnx  # noqa: E402
from ovseg.inference.onnx_backend import METADATA_FILE, ExportFormatError  # noqa: E402
from ovseg.utils.image import load_image, resize_shortest_edge  # noqa: E402

CFG = REPO / "ovseg/configs/tests/fcclip_tiny_train_oneformer.yaml"
VOCAB = "cat; person; sky [stuff]; grass [stuff]"
IMAGE = REPO / "demo/examples/chelsea.jpg"


def _padded_size(seg: Segmenter) -> tuple[int, int]:
    t = seg.config.model.test
    image = resize_shortest_edge(load_image(IMAGE), t.min_size, t.max_size)
    chw = torch.from_numpy(image.copy()).permute(2, 0, 1)
    return tuple(int(s) for s in seg.model.normalize_and_pad([chw]).shape[-2:])


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The same random-init weights exported with the panoptic token (the default
    ``model.test.task``) and with the semantic one (``select_task`` before the export)."""
    torch.manual_seed(0)
    seg = Segmenter.from_config(CFG, overrides=["model.test.vocabulary=null"])
    size = _padded_size(seg)
    work = tmp_path_factory.mktemp("oneformer_export")
    metas = {}
    for token in ("panoptic", "semantic"):
        seg.model.select_task(token)
        metas[token] = export_onnx(seg, work / token, sizes=[size])
    return seg, work, metas


def test_metadata_records_the_traced_token(exports):
    _, work, metas = exports
    assert metas["panoptic"]["task_token"] == "panoptic"
    assert metas["semantic"]["task_token"] == "semantic"
    on_disk = json.loads((work / "semantic" / METADATA_FILE).read_text())
    assert on_disk["task_token"] == "semantic"


@pytest.mark.parametrize(("token", "task"), [("panoptic", "all"), ("semantic", "semantic")])
def test_a_request_with_the_exported_token_matches_pytorch(exports, token, task):
    seg, work, _ = exports
    ref = seg.predict(IMAGE, VOCAB, task=task).sem_seg.numpy()
    got = Segmenter.from_pretrained(work / token).predict(IMAGE, VOCAB, task=task).sem_seg
    assert got.shape == ref.shape
    assert float(np.abs(got.numpy() - ref).max()) <= 1e-4


def test_the_tokens_differ_so_a_wrong_token_would_be_a_wrong_answer(exports):
    seg, _, _ = exports
    pan = seg.predict(IMAGE, VOCAB, task="all").sem_seg
    sem = seg.predict(IMAGE, VOCAB, task="semantic").sem_seg
    # ~9e-3 with these random weights (0.34 on the trained toy model, docs/oneformer.md): ten
    # times the 1e-4 the export is held to, so a wrong token cannot pass the checks above.
    assert float((pan - sem).abs().max()) > 1e-3


@pytest.mark.parametrize(
    ("token", "task", "needed"),
    [("panoptic", "semantic", "semantic"), ("semantic", "all", "panoptic")],
)
def test_a_request_needing_another_token_is_refused(exports, token, task, needed):
    _, work, _ = exports
    onnx_seg = Segmenter.from_pretrained(work / token)
    with pytest.raises(ValueError, match=rf"needs OneFormer's '{needed}' task token") as e:
        onnx_seg.predict(IMAGE, VOCAB, task=task)
    assert f"model.test.task={needed}" in str(e.value)


def test_older_exports_without_the_key_take_their_configs_token(exports, tmp_path):
    _, work, _ = exports
    old = tmp_path / "old"
    shutil.copytree(work / "panoptic", old)
    meta = json.loads((old / METADATA_FILE).read_text())
    del meta["task_token"]
    (old / METADATA_FILE).write_text(json.dumps(meta))
    onnx_seg = Segmenter.from_pretrained(old)  # config: model.test.task panoptic
    assert onnx_seg.model.task_token == "panoptic"
    with pytest.raises(ValueError, match="needs OneFormer's 'semantic' task token"):
        onnx_seg.predict(IMAGE, VOCAB, task="semantic")


def test_a_tampered_token_is_a_format_error(exports, tmp_path):
    _, work, _ = exports
    bad = tmp_path / "bad"
    shutil.copytree(work / "panoptic", bad)
    meta = json.loads((bad / METADATA_FILE).read_text())
    meta["task_token"] = "../semantic"
    (bad / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ExportFormatError, match="task_token '../semantic' is none of"):
        Segmenter.from_pretrained(bad)
