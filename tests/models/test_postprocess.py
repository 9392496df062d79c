"""Post-processing at bounded memory: banded / working-size paths equal the direct ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.models import postprocess as pp


def test_rows_band_equals_interpolate_up_and_down():
    torch.manual_seed(0)
    m = torch.randn(5, 37, 53)
    for out in ((101, 149), (20, 31), (37, 53)):
        resize = pp.MaskResize((37, 53), (37, 53), out)
        ref = F.interpolate(m[None], size=out, mode="bilinear", align_corners=False)[0]
        bands = [resize.rows(m, y0, min(out[0], y0 + 7)) for y0 in range(0, out[0], 7)]
        torch.testing.assert_close(torch.cat(bands, 1), ref, atol=1e-4, rtol=0)


def test_capped_semantic_gives_the_full_argmax_and_bounded_scores():
    torch.manual_seed(1)
    cls = torch.randn(12, 7 + 1).log_softmax(-1)
    logits = torch.randn(12, 24, 32) * 3
    resize = pp.MaskResize((96, 128), (90, 120), (181, 241))
    full, none1, none2 = pp.semantic_inference(cls, logits, resize, 0)
    assert full.shape == (7, 181, 241) and none1 is None and none2 is None
    cap = 7 * 50 * 60
    small, labels, scores = pp.semantic_inference(cls, logits, resize, cap)
    assert small.numel() <= cap and small.shape[0] == 7
    best, ref = full.max(0)
    assert (labels == ref).float().mean() > 0.9999
    torch.testing.assert_close(scores, best, atol=1e-5, rtol=0)


def test_nearest_upsampling_matches_interpolate_for_every_dtype():
    x = torch.randint(0, 9, (3, 13, 17))
    size = (40, 29)
    ref = F.interpolate(x[None].float(), size=size, mode="nearest")[0]
    assert torch.equal(pp.upsample_nearest(x, size).float(), ref)
    assert torch.equal(pp.upsample_nearest(x.to(torch.int32)[0], size).float(), ref[0])
    assert torch.equal(pp.upsample_nearest(x > 4, size), ref > 4)


def test_working_size_post_processing_upsamples_ids_and_recounts_areas():
    torch.manual_seed(2)
    cls = torch.randn(10, 4 + 1).log_softmax(-1)
    logits = torch.randn(10, 16, 16) * 4
    isthing = [True, True, False, False]
    out_size = (300, 400)
    work = pp.working_size(out_size, 100 * 100)
    assert work == (86, 115) and pp.working_size(out_size, 0) == out_size
    resize = pp.MaskResize((64, 64), (60, 64), work)
    pan, info = pp.panoptic_inference(cls, logits, resize, isthing, 0.0, 0.0)
    inst = pp.instance_inference(cls, logits, resize, isthing)
    sem = pp.semantic_inference(cls, logits, resize)[0]
    res = {"sem_seg": sem, "panoptic_seg": pan, "segments_info": info, "instances": inst}
    up = pp.upsample_outputs(res, out_size)
    assert up["panoptic_seg"].shape == out_size and up["instances"]["masks"].shape[1:] == out_size
    assert up["sem_seg"].shape[1:] == work  # scores stay small; labels are full size
    assert torch.equal(up["sem_seg_labels"], pp.upsample_nearest(sem.argmax(0), out_size))
    for s in up["segments_info"]:
        assert s["area"] == int((up["panoptic_seg"] == s["id"]).sum())
    assert info and info[0]["area"] != up["segments_info"][0]["area"]  # recounted, not copied
