"""Cityscapes' label table (cityscapesscripts' ``labels.py``): the one home for the reader, the
preparer and the official instance evaluator."""

from __future__ import annotations

# (id, name, trainId, hasInstances, ignoreInEval) of label ids 0..33.
CITYSCAPES_LABELS: tuple[tuple[int, str, int, bool, bool], ...] = (
    (0, "unlabeled", 255, False, True), (1, "ego vehicle", 255, False, True),
    (2, "rectification border", 255, False, True), (3, "out of roi", 255, False, True),
    (4, "static", 255, False, True), (5, "dynamic", 255, False, True),
    (6, "ground", 255, False, True), (7, "road", 0, False, False),
    (8, "sidewalk", 1, False, False), (9, "parking", 255, False, True),
    (10, "rail track", 255, False, True), (11, "building", 2, False, False),
    (12, "wall", 3, False, False), (13, "fence", 4, False, False),
    (14, "guard rail", 255, False, True), (15, "bridge", 255, False, True),
    (16, "tunnel", 255, False, True), (17, "pole", 5, False, False),
    (18, "polegroup", 255, False, True), (19, "traffic light", 6, False, False),
    (20, "traffic sign", 7, False, False), (21, "vegetation", 8, False, False),
    (22, "terrain", 9, False, False), (23, "sky", 10, False, False),
    (24, "person", 11, True, False), (25, "rider", 12, True, False),
    (26, "car", 13, True, False), (27, "truck", 14, True, False),
    (28, "bus", 15, True, False), (29, "caravan", 255, True, True),
    (30, "trailer", 255, True, True), (31, "train", 16, True, False),
    (32, "motorcycle", 17, True, False), (33, "bicycle", 18, True, False),
)  # fmt: skip

# Label id of each of the 19 trainIds (in trainId order): the category ids of the panoptic json
# and of gtFine_instanceIds (value = label id * 1000 + instance, or the label id alone for a group).
LABEL_IDS: tuple[int, ...] = tuple(
    lid for lid, _, train_id, _, _ in sorted(CITYSCAPES_LABELS, key=lambda lab: lab[2])
    if train_id != 255
)  # fmt: skip
# trainIds of the evaluated classes with instances (person .. bicycle).
THING_TRAIN_IDS: tuple[int, ...] = tuple(
    train_id for _, _, train_id, thing, ignored in CITYSCAPES_LABELS if thing and not ignored
)
# label id -> name of the evaluated classes with instances.
INSTANCE_LABELS: dict[int, str] = {
    lid: name for lid, name, _, thing, ignored in CITYSCAPES_LABELS if thing and not ignored
}
# label ids whose pixels are void in evaluation (ignoreInEval), plus cityscapesscripts' -1.
VOID_LABEL_IDS: tuple[int, ...] = (
    *(lid for lid, _, _, _, ignored in CITYSCAPES_LABELS if ignored),
    -1,
)
