"""The per-image work of labelling, the same for every backend (one process, torchrun, Ray).

A :class:`Labeller` owns one Segmenter, the vocabulary (its text classifier encoded once by the
driver and adopted here) and the output store; :meth:`Labeller.process` turns a batch of
prepared images into per-image result files. :func:`label_local` feeds it from a DataLoader
whose worker processes read and resize images while the model runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ovseg.inference.segmenter import PreparedImage, Segmenter, prepare_image
from ovseg.labelling.coco import prediction_record
from ovseg.labelling.store import LabelStore, WorkItem
from ovseg.structures import TextClassifier
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.image import ImageLoadError, id2rgb, save_label_png


@dataclass
class Counts:
    """What one process did: images written and images failed."""

    done: int = 0
    failed: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.done += other.done
        self.failed += other.failed
        return self


@dataclass(frozen=True)
class Loaded:
    """A work item and its prepared image, or the reason it could not be read."""

    item: WorkItem
    image: PreparedImage | None
    error: str | None = None


def load_item(item: WorkItem, min_size: int, max_size: int, max_pixels: int = 0) -> Loaded:
    """Read and resize one image; an unreadable one becomes a :class:`Loaded` with an error."""
    try:
        return Loaded(item, prepare_image(item.path, min_size, max_size, max_pixels))
    except ImageLoadError as e:
        return Loaded(item, None, str(e))
    except Exception as e:  # a decoder's own error: report it with the image, go on
        return Loaded(item, None, f"cannot read image {item.path}: {type(e).__name__}: {e}")


class Labeller:
    """Segments prepared images and writes one result per image into a :class:`LabelStore`.

    Args:
        segmenter: the model.
        vocabulary: the classes.
        store: the output folder.
        task: "panoptic", "instance" or "semantic".
        min_score: annotations scoring below it are left out.
        save_png: also write the task's label PNG per image.
        text: the vocabulary's text classifier, encoded once elsewhere; None encodes it here.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        vocabulary: Vocabulary,
        store: LabelStore,
        task: str,
        min_score: float = 0.0,
        save_png: bool = False,
        text: TextClassifier | None = None,
    ):
        self.segmenter = segmenter
        self.vocabulary = vocabulary
        self.store = store
        self.task = task
        self.min_score = min_score
        self.save_png = save_png
        if text is not None:
            segmenter.use_text_classifier(text)
        else:
            segmenter.encode_vocabulary(vocabulary)

    @property
    def sizes(self) -> tuple[int, int, int]:
        """(min_size, max_size, max_image_pixels) of the model's test-time resize."""
        t = self.segmenter.config.model.test
        return t.min_size, t.max_size, t.max_image_pixels

    def process(self, batch: Sequence[Loaded]) -> Counts:
        """Segment the readable images of ``batch`` (one batched forward where the model
        allows) and write each result; failures are recorded with their reason."""
        counts = Counts()
        good = [b for b in batch if b.image is not None]
        for b in batch:
            if b.image is None:
                self._fail(b.item, b.error or "unreadable", counts)
        if not good:
            return counts
        try:
            preds = self.segmenter.predict_batch(
                [b.image for b in good], self.vocabulary, self.task
            )
        except Exception as e:
            if len(good) > 1:  # find the culprit: one image at a time
                for b in good:
                    counts += self.process([b])
                return counts
            self._fail(good[0].item, f"{good[0].item.path}: {type(e).__name__}: {e}", counts)
            return counts
        for b, pred in zip(good, preds):
            try:
                self._write(b.item, pred)
                counts.done += 1
            except Exception as e:
                self._fail(b.item, f"{b.item.path}: {type(e).__name__}: {e}", counts)
        return counts

    def _write(self, item: WorkItem, pred: Any) -> None:
        record, labels = prediction_record(pred, self.task, self.min_score)
        if self.save_png:
            png = self.store.png_path(item)
            if self.task == "panoptic":
                save_label_png(png, id2rgb(labels))
            else:
                save_label_png(png, labels, bits=16 if labels.max(initial=0) > 255 else 8)
            record["png"] = png.name
        self.store.write_result(item, record)  # last: its presence means the image is done

    def _fail(self, item: WorkItem, reason: str, counts: Counts) -> None:
        from tqdm import tqdm

        tqdm.write(f"error: {reason}", file=sys.stderr)
        self.store.write_failure(item, reason)
        counts.failed += 1


class _PreparedImages(Dataset):
    """Work items -> :class:`Loaded` (read + resize), run in DataLoader workers."""

    def __init__(self, items: Sequence[WorkItem], min_size: int, max_size: int, max_pixels: int):
        self.items = list(items)
        self.min_size, self.max_size, self.max_pixels = min_size, max_size, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Loaded:
        return load_item(self.items[i], self.min_size, self.max_size, self.max_pixels)


def _as_list(batch: list[Loaded]) -> list[Loaded]:
    return batch


def label_local(
    labeller: Labeller,
    items: Sequence[WorkItem],
    batch_size: int = 1,
    num_workers: int = 2,
    progress: bool = True,
    desc: str = "labelling",
) -> Counts:
    """Label ``items`` in this process: ``num_workers`` DataLoader processes read and resize
    the images (0: in this process) while the model runs on batches of ``batch_size``; a tqdm
    bar shows images/s and the ETA. Memory stays bounded: at most ``2 * num_workers`` batches
    wait in the loader's queue."""
    from tqdm import tqdm

    counts = Counts()
    if not items:
        return counts
    loader = DataLoader(
        _PreparedImages(items, *labeller.sizes),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_as_list,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress, file=sys.stderr)
    try:
        for batch in loader:
            counts += labeller.process(batch)
            bar.update(len(batch))
            bar.set_postfix(failed=counts.failed, refresh=False)
    finally:
        bar.close()
    return counts


def classifier_payload(text: TextClassifier) -> dict[str, Any]:
    """A text classifier as plain data (a numpy array and lists) to send to other processes."""
    return {
        "embeddings": text.embeddings.detach().float().cpu().numpy(),
        "num_synonyms": list(text.num_synonyms),
        "vocabulary": text.vocabulary,
    }


def classifier_from_payload(payload: dict[str, Any]) -> TextClassifier:
    """The inverse of :func:`classifier_payload`."""
    emb = torch.from_numpy(np.asarray(payload["embeddings"]).copy())
    return TextClassifier(emb, list(payload["num_synonyms"]), payload["vocabulary"])
