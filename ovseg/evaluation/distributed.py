"""Per-image statistics across ranks for the evaluators (the collectives themselves live in
:mod:`ovseg.utils.dist`, shared with training).

Evaluators keep small per-rank statistics (a confusion matrix, per-class TP/FP/FN counts, a list of
RLE detections) and combine them only in ``evaluate()``, so sharded evaluation gives the numbers of
one process.
"""

from __future__ import annotations

from typing import Any

from ovseg.evaluation.errors import EvaluationError
from ovseg.utils.dist import all_gather_object


def gather_per_image(per_image: dict[Any, Any]) -> dict[Any, Any]:
    """Merge every rank's ``{image id: statistics}``; each image must come from one rank only.

    Raises:
        EvaluationError: an image evaluated on more than one rank (a padded or overlapping shard).
    """
    merged: dict[Any, Any] = {}
    for rank, part in enumerate(all_gather_object(per_image)):
        for image_id, stats in part.items():
            if image_id in merged:
                raise EvaluationError(
                    f"image {image_id} was evaluated on more than one rank (again on rank "
                    f"{rank}): shard the set without padding (e.g. indices[rank::world_size])"
                )
            merged[image_id] = stats
    return merged
