"""The ONNX export run by ONNX Runtime reproduces the official FC-CLIP outputs
(../shared/fixtures/fcclip_tiny*, same tolerances as tests/models/test_fcclip_fixtures.py) and
the PyTorch path on a second vocabulary and a second image size; bad folders fail in one line.

Each fixture is exported twice from a copy of its checkpoint that is deleted before the export
is loaded: with fixed sizes (two padded sizes: the fixture's and its transpose's) and with
``dynamic=True`` (one graph for every padded size). Every output check runs on both.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from ovseg_testing import REPO, assert_instances_match_fixture, fixture_dir

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from ovseg import Segmenter, Vocabulary  # noqa: E402
from ovseg.export import export_onnx, export_program, load_program  # noqa: E402
from ovseg.export.onnx import example_seam_inputs  # noqa: E402
from ovseg.inference.onnx_backend import METADATA_FILE, ExportFormatError  # noqa: E402
from ovseg.utils.image import load_image  # noqa: E402

CASES = {
    "fcclip_tiny": ("fcclip_tiny_a.pth", "configs/tests/fcclip_tiny.yaml"),
    "fcclip_tiny_rn": ("fcclip_tiny_rn_c.pth", "configs/tests/fcclip_tiny_rn.yaml"),
}
SECOND_VOCAB = "zebra, horse; dry grass, hay [stuff]; sky [stuff]; person; car, automobile"


def fixture_vocabulary(path) -> Vocabulary:
    v = json.loads((path / "vocabulary.json").read_text())
    return Vocabulary(
        [c["name"] for c in v["classes"]], isthing=[c["isthing"] for c in v["classes"]]
    )


MODES = [(name, mode) for mode in ("sizes", "dynamic") for name in sorted(CASES)]


@pytest.fixture(scope="module", params=MODES, ids=[f"{n}-{m}" for n, m in MODES])
def exported(request, tmp_path_factory):
    name, mode = request.param
    path = fixture_dir(name)
    ckpt, config = CASES[name]
    work = tmp_path_factory.mktemp(f"{name}_{mode}")
    copy = work / ckpt
    shutil.copy(path / ckpt, copy)
    torch_seg = Segmenter.from_pretrained(copy, config=REPO / config)
    hp, wp = np.load(path / "pred_masks.npy").shape[-2:]
    size = (int(hp) * 4, int(wp) * 4)
    out = work / "export"
    if mode == "dynamic":
        meta = export_onnx(torch_seg, out, sizes=[size], dynamic=True, max_side=1024)
    else:
        meta = export_onnx(torch_seg, out, sizes=[size, size[::-1]])
    copy.unlink()  # the export must not need the checkpoint
    onnx_seg = Segmenter.from_pretrained(out)
    return path, torch_seg, onnx_seg, out, meta


def is_dynamic(meta) -> bool:
    return meta["image_graphs"][0]["size"] is None


def test_folder_is_self_contained(exported):
    _, _, onnx_seg, out, meta = exported
    names = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert not [n for n in names if n.endswith((".pth", ".pt", ".safetensors", ".bin"))]
    assert METADATA_FILE in names and "text.onnx" in names
    assert len(meta["image_graphs"]) == (1 if is_dynamic(meta) else 2)
    assert meta["size_divisibility"] == 32
    assert meta["pixel_mean"] == [122.7709383, 116.7460125, 104.09373615]
    assert len(meta["text"]["templates"]) == 14
    assert onnx_seg.backend is not None


def test_text_graph_gives_fixture_classifier(exported):
    path, _, onnx_seg, _, _ = exported
    text = onnx_seg.encode_vocabulary(fixture_vocabulary(path))
    ref = np.load(path / "text_classifier.npy")
    np.testing.assert_allclose(text.embeddings.numpy(), ref, atol=1e-5)


@pytest.fixture(scope="module")
def onnx_pred(exported):
    path, _, onnx_seg, _, _ = exported
    return onnx_seg.predict(path / "image.png", fixture_vocabulary(path), task="all")


def test_semantic_matches_fixture(exported, onnx_pred):
    path = exported[0]
    ref = np.load(path / "sem_seg.npy")
    assert onnx_pred.sem_seg.shape == ref.shape
    assert float(np.abs(onnx_pred.sem_seg.numpy() - ref).max()) <= 1e-4


def test_panoptic_matches_fixture(exported, onnx_pred):
    path = exported[0]
    np.testing.assert_array_equal(
        onnx_pred.panoptic_seg.numpy(), np.load(path / "panoptic_seg.npy")
    )
    ref = json.loads((path / "panoptic_segments_info.json").read_text())
    mine = [
        {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
        for s in onnx_pred.segments_info
    ]
    assert mine == ref


def test_instances_match_fixture(exported, onnx_pred):
    assert_instances_match_fixture(onnx_pred, exported[0])


def test_second_vocabulary_and_size_match_pytorch(exported):
    """The transposed image pads to the export's second size. Off the fixture image the two
    runtimes' float32 sums differ slightly more (1.35e-4 seen on the ResNet fixture), hence
    2e-4 on sem_seg; segments and instance sets are identical."""
    path, torch_seg, onnx_seg, _, meta = exported
    image = np.ascontiguousarray(load_image(path / "image.png").transpose(1, 0, 2))
    for vocab in (SECOND_VOCAB,):
        a = torch_seg.predict(image, vocab, task="all")
        b = onnx_seg.predict(image, vocab, task="all")
        assert b.extras["input_size"] == a.extras["input_size"]
        err = float((a.sem_seg - b.sem_seg).abs().max())
        assert err <= 2e-4, f"{vocab!s:.30}: sem_seg max abs diff {err:.3g}"
        assert torch.equal(a.panoptic_seg, b.panoptic_seg)
        key = [(s["id"], s["category_id"], s["label"]) for s in a.segments_info]
        assert key == [(s["id"], s["category_id"], s["label"]) for s in b.segments_info]
        assert a.instances.labels.tolist() == b.instances.labels.tolist()
        torch.testing.assert_close(a.instances.scores, b.instances.scores, atol=1e-5, rtol=0)


def test_unexported_size_is_refused_or_dynamic_takes_it(exported):
    """A fixed-size export refuses a padded size it has no graph for; the dynamic graph runs it
    (the fixture photo transposed, and a 130x90 crop of it: two padded sizes it was not traced
    at) with the PyTorch path's results, and refuses a side beyond its ``max_side``."""
    path, torch_seg, onnx_seg, _, meta = exported
    image = np.zeros((500, 700, 3), np.uint8)  # resizes to a padded size that was not exported
    if not is_dynamic(meta):
        with pytest.raises(ExportFormatError, match="re-export with --size"):
            onnx_seg.predict(image, fixture_vocabulary(path), task="semantic")
        return
    photo = load_image(path / "image.png")
    for image in (np.ascontiguousarray(photo.transpose(1, 0, 2)), photo[:130, :90]):
        a = torch_seg.predict(image, SECOND_VOCAB, task="all")
        b = onnx_seg.predict(image, SECOND_VOCAB, task="all")
        assert b.extras["input_size"] == a.extras["input_size"]
        assert float((a.sem_seg - b.sem_seg).abs().max()) <= 2e-4
        assert torch.equal(a.panoptic_seg, b.panoptic_seg)
    with pytest.raises(ExportFormatError, match="exceeds this dynamic export's largest side 1024"):
        onnx_seg.backend(torch.zeros(1, 3, 1056, 32), *example_seam_inputs(torch_seg, (32, 32))[1:])


def test_bad_folders(exported, tmp_path):
    out = exported[3]
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "text.onnx").unlink()
    with pytest.raises(ExportFormatError, match="missing graph file.*text.onnx"):
        Segmenter.from_pretrained(broken)
    old = tmp_path / "old"
    shutil.copytree(out, old)
    meta = json.loads((old / METADATA_FILE).read_text())
    meta.update(format_version=0, ovseg_version="0.0.1")
    (old / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ExportFormatError, match="format version 0 .*ovseg 0.0.1.*re-export"):
        Segmenter.from_pretrained(old)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportFormatError, match="not an ovseg export"):
        Segmenter.from_pretrained(empty)


def test_torch_export_round_trip(exported, tmp_path):
    """Saved and reloaded, the ExportedProgram equals the seam; the dynamic one at a second
    padded size and vocabulary too."""
    path, torch_seg, _, _, meta = exported
    if path.name != "fcclip_tiny":
        pytest.skip("one torch.export case per mode is enough (~30 s each on 2 cores)")
    dynamic = is_dynamic(meta)
    size = (224, 320)
    export_program(torch_seg, tmp_path / "seam.pt2", size=size, dynamic=dynamic)
    seam = load_program(tmp_path / "seam.pt2")
    checks = [example_seam_inputs(torch_seg, size)]
    if dynamic:
        images = example_seam_inputs(torch_seg, (96, 160))[0]
        text = torch.nn.functional.normalize(torch.randn(7, checks[0][1].shape[1]), dim=-1)
        checks.append((images, text, torch.tensor([0, 1, 1, 2, 3, 3, 3]), torch.ones(4) > 0))
    for inputs in checks:
        with torch.no_grad():
            ref = torch_seg.model.predict_logits(*inputs)
            got = seam(*inputs)
        for r, g in zip(ref, got):
            torch.testing.assert_close(g, r, atol=1e-5, rtol=0)


def test_demo_runs_an_export_folder_like_weights(exported, tmp_path):
    """The demo takes the export folder where it takes weights; its segments are the PyTorch
    model's on the fixture image."""
    from ovseg.cli.demo import main as demo_main

    path, torch_seg, _, out, _ = exported
    if out.parent.name.startswith(f"{path.name}_dynamic"):
        pytest.skip("the demo's path does not depend on the graph kind (checked with sizes)")
    vocab = fixture_vocabulary(path)
    text = "; ".join(
        ", ".join(c.synonyms) + ("" if thing else " [stuff]")
        for c, thing in zip(vocab.classes, vocab.isthing)
    )
    img = path / "image.png"
    rc = demo_main(["--model", str(out), "--input", str(img), "--vocab", text,
                    "--output", str(tmp_path / "demo")])  # fmt: skip
    assert rc == 0
    rows = json.loads((tmp_path / "demo" / f"{img.stem}.json").read_text())["segments"]
    ref = torch_seg.predict(load_image(img), vocab, task="panoptic").segments_info
    assert [(r["label"], r["area"]) for r in rows] == [(s["label"], s["area"]) for s in ref]


def test_a_missing_onnxruntime_is_one_line_naming_the_extra(exported, tmp_path):
    """Without onnxruntime importable (sys.modules entry None: import raises ImportError), an
    export folder fails at set-up with the extra to install, not a traceback."""
    import subprocess
    import sys

    path, _, _, out, meta = exported
    if is_dynamic(meta) or path.name != "fcclip_tiny":
        pytest.skip("one case is enough")
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from ovseg.cli.demo import main\n"
        f"sys.exit(main(['--model', {str(out)!r}, '--input', {str(img)!r}, '--vocab', 'cat',"
        f" '--output', {str(tmp_path / 'o')!r}]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "pip install -e '.[export]'" in proc.stderr and "Traceback" not in proc.stderr
