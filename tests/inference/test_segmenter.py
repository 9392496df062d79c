"""The Segmenter API on the tiny config: tasks, caching, checkpoints and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ovseg_testing import REPO, fixture_dir

from ovseg import Segmenter, Vocabulary
from ovseg.checkpoint import CheckpointError
from ovseg.config import ConfigError
from ovseg.utils.image import ImageLoadError

TINY = REPO / "ovseg/configs/tests/fcclip_tiny.yaml"
VOCAB = Vocabulary.parse("person, man; zebra; dry grass, hay [stuff]; sky [stuff]")


@pytest.fixture(scope="module")
def seg():
    torch.manual_seed(0)
    return Segmenter.from_config(TINY)


def image(h=90, w=130, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_all_tasks_at_input_resolution(seg):
    pred = seg.predict(image(), VOCAB, task="all")
    assert pred.image_size == (90, 130)
    assert pred.sem_seg.shape == (4, 90, 130) and pred.sem_seg.dtype == torch.float32
    assert pred.panoptic_seg.shape == (90, 130) and pred.panoptic_seg.dtype == torch.int32
    ids = set(pred.panoptic_seg.unique().tolist()) - {0}
    assert ids == {s["id"] for s in pred.segments_info}
    for s in pred.segments_info:
        assert (
            s["label"] == VOCAB[s["category_id"]].name
            and s["isthing"] == VOCAB.isthing[s["category_id"]]
        )
    inst = pred.instances
    assert inst.masks.shape[1:] == (90, 130) and inst.masks.dtype == torch.bool
    assert all(VOCAB.isthing[int(c)] for c in inst.labels), "instances are thing classes only"
    assert pred.semantic_map().shape == (90, 130)


def test_only_requested_task(seg):
    pred = seg.predict(image(), VOCAB, task="instance")
    assert pred.sem_seg is None and pred.panoptic_seg is None and pred.instances is not None
    with pytest.raises(ValueError, match="unknown task 'panoptics'"):
        seg.predict(image(), VOCAB, task="panoptics")


def test_large_image_is_resized_and_output_at_input_size(seg):
    pred = seg.predict(image(1500, 700), VOCAB, task="semantic")
    assert pred.sem_seg.shape[1:] == (1500, 700)
    assert pred.extras["input_size"] == (429, 200)  # short side -> 200 (config min_size)


def test_vocabulary_forms(seg):
    assert seg.vocabulary("zebra; sky [stuff]").names == ["zebra", "sky"]
    assert seg.vocabulary(["cat", "dog"]).names == ["cat", "dog"]
    assert len(seg.vocabulary("ade20k-150")) == 150
    assert len(seg.vocabulary(None)) == 150  # the config's default
    with pytest.raises(ValueError, match="empty"):
        seg.predict(image(), [], task="semantic")


def test_text_is_encoded_once(seg):
    calls = []
    enc = seg.model.text_encoder
    original = enc.encode_synonyms
    enc.encode_synonyms = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        v = Vocabulary(["unicorn", "rainbow"])
        a = seg.encode_vocabulary(v)
        b = seg.encode_vocabulary(Vocabulary(["unicorn", "rainbow"]))
        seg.predict(image(), v, task="semantic")
    finally:
        enc.encode_synonyms = original
    assert len(calls) == 1
    assert torch.equal(a.embeddings, b.embeddings)
    assert a.embeddings.shape == (2, 64)
    torch.testing.assert_close(a.embeddings.norm(dim=-1), torch.ones(2))


def test_disk_cache_survives_a_new_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_HOME", str(tmp_path))
    torch.manual_seed(0)
    s1 = Segmenter.from_config(TINY, overrides=["model.text.disk_cache=true"])
    e1 = s1.encode_vocabulary(VOCAB).embeddings
    files = list((tmp_path / "text_embeddings").glob("*.pt"))
    assert len(files) == 1
    torch.manual_seed(0)
    s2 = Segmenter.from_config(TINY, overrides=["model.text.disk_cache=true"])
    s2.model.text_encoder.encode_synonyms = lambda *a, **k: pytest.fail(
        "should come from the disk cache"
    )
    assert torch.equal(s2.encode_vocabulary(VOCAB).embeddings, e1)
    files[0].write_bytes(b"garbage")  # a broken cache file is rebuilt, not trusted
    torch.manual_seed(0)
    s3 = Segmenter.from_config(TINY, overrides=["model.text.disk_cache=true"])
    assert torch.allclose(s3.encode_vocabulary(VOCAB).embeddings, e1)


def test_long_names_are_truncated_with_a_warning(seg):
    with pytest.warns(UserWarning, match="truncated"):
        seg.encode_vocabulary(Vocabulary(["very " * 80 + "long thing", "cat"]))


def test_frozen_clip(seg):
    m = seg.model
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert all(p.requires_grad for p in m.predictor.parameters())
    m.train()
    try:
        # The frozen CLIP stays in eval mode (a backbone's own adapters, e.g. a ViT pyramid, train).
        assert not any(x.training for x in m.backbone.clip_model.modules())
        assert m.predictor.training
    finally:
        m.eval()
    keys = m.trainable_state_dict()
    assert not any(k.startswith("backbone.") for k in keys) and "void_embedding.weight" in keys


def test_checkpoint_round_trip(seg, tmp_path):
    path = seg.save(tmp_path / "tiny.pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "ovseg" and "model:" in raw["config"]
    assert raw["meta"]["includes_clip"] is True  # random CLIP: no named source, so it is saved
    again = Segmenter.from_pretrained(path)
    a = seg.predict(image(), VOCAB, task="all")
    b = again.predict(image(), VOCAB, task="all")
    torch.testing.assert_close(a.sem_seg, b.sem_seg)
    assert torch.equal(a.panoptic_seg, b.panoptic_seg)


def test_shape_mismatch_names_key_and_shapes(seg, tmp_path):
    path = seg.save(tmp_path / "tiny.pth")
    with pytest.raises(
        CheckpointError, match=r"'.*' has shape \(.*\) in the checkpoint but \(.*\) in the model"
    ):
        Segmenter.from_pretrained(path, config=TINY, overrides=["model.decoder.num_queries=100"])


def test_bad_checkpoints(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        Segmenter.from_pretrained(empty)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Segmenter.from_pretrained(junk)


def test_official_checkpoint_needs_config():
    path = fixture_dir("fcclip_tiny") / "fcclip_tiny_a.pth"
    with pytest.raises(CheckpointError, match="without a config"):
        Segmenter.from_pretrained(path)


def test_unknown_config_key():
    with pytest.raises(ConfigError, match="did you mean 'model.decoder.num_queries'"):
        Segmenter.from_config(TINY, overrides=["model.decoder.num_query=3"])


def test_bad_images(seg, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        seg.predict(bad, VOCAB)
    grey = np.full((40, 50), 128, dtype=np.uint8)
    assert seg.predict(grey, VOCAB, task="semantic").sem_seg.shape == (4, 40, 50)


def test_clip_weights_from_a_local_file(seg, tmp_path):
    """``model.backbone.pretrained`` as a file goes through open_clip's own loader."""
    weights = tmp_path / "clip.pt"
    torch.save(seg.model.backbone.clip_model.state_dict(), weights)
    other = Segmenter.from_config(TINY, overrides=[f"model.backbone.pretrained={weights}"])
    for (k, a), b in zip(
        seg.model.backbone.clip_model.state_dict().items(),
        other.model.backbone.clip_model.state_dict().values(),
    ):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="neither a file nor an open_clip tag"):
        Segmenter.from_config(TINY, overrides=["model.backbone.pretrained=no_such_tag"])


def test_fast_precision_mode_is_close_to_exact():
    """bf16 autocast (opt-in) stays close to fp32 on the fixture; the README gives the numbers."""
    fx = fixture_dir("fcclip_tiny")
    import json

    classes = json.loads((fx / "vocabulary.json").read_text())["classes"]
    vocab = Vocabulary([c["name"] for c in classes], isthing=[c["isthing"] for c in classes])
    seg = Segmenter.from_pretrained(
        fx / "fcclip_tiny_a.pth", config=TINY, overrides=["model.test.precision=bf16"]
    )
    pred = seg.predict(fx / "image.png", vocab, task="panoptic")
    exact = np.load(fx / "panoptic_seg.npy")
    assert pred.panoptic_seg.dtype == torch.int32
    assert (pred.panoptic_seg.numpy() == exact).mean() > 0.8
    with pytest.raises(ValueError, match="precision"):
        Segmenter.from_config(TINY, overrides=["model.test.precision=int8"]).predict(image(), VOCAB)


def test_predict_batch_equals_predict(seg):
    """Equal-size images share one forward pass; a differently sized one gets its own; each
    result is what predict() gives for that image alone."""
    images = [image(90, 130, 1), image(60, 60, 2), image(90, 130, 3)]
    batch = seg.predict_batch([seg.prepare(im) for im in images], VOCAB, task="all")
    for im, got in zip(images, batch):
        want = seg.predict(im, VOCAB, task="all")
        assert got.image_size == want.image_size == im.shape[:2]
        torch.testing.assert_close(got.sem_seg, want.sem_seg, atol=1e-5, rtol=1e-4)
        assert (got.panoptic_seg != want.panoptic_seg).float().mean() < 1e-3
        torch.testing.assert_close(got.instances.scores, want.instances.scores, atol=1e-5, rtol=0)


def test_predict_batch_one_pass_per_image_modes_keep_the_input_size():
    """Slide mode (and export backends) run predict_batch image by image: the result is at the
    input image's size, as predict() gives it, not at model resolution."""
    torch.manual_seed(0)
    slide = Segmenter.from_config(
        TINY, overrides=["model.test.mode=slide", "model.test.crop_size=[96,96]",
                         "model.test.stride=[64,64]"],
    )  # fmt: skip
    im = image(150, 220, 4)
    (got,) = slide.predict_batch([slide.prepare(im)], VOCAB, task="semantic")
    want = slide.predict(im, VOCAB, task="semantic")
    assert got.image_size == want.image_size == (150, 220)
    assert got.sem_seg.shape[1:] == (150, 220)
    torch.testing.assert_close(got.sem_seg, want.sem_seg)


def test_a_shared_text_classifier_is_not_encoded_again(seg):
    """use_text_classifier(): a classifier encoded in another process is adopted, not re-encoded."""
    vocab = Vocabulary.parse("kite; harbour [stuff]")
    torch.manual_seed(0)
    other = Segmenter.from_config(TINY)
    text = other.encode_vocabulary(vocab)
    shared = type(text)(text.embeddings.clone(), text.num_synonyms, vocab)

    def refuse(*args, **kwargs):
        raise AssertionError("the text classifier was encoded again")

    torch.manual_seed(0)
    worker = Segmenter.from_config(TINY)
    worker.model.text_encoder.encode_synonyms = refuse
    worker.use_text_classifier(shared)
    pred = worker.predict(image(), vocab, task="semantic")
    torch.testing.assert_close(pred.sem_seg, other.predict(image(), vocab, task="semantic").sem_seg)
