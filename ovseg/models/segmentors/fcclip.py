"""FC-CLIP: frozen CLIP + mask transformer, classified against text embeddings, ensembled with
mask-pooled frozen CLIP features for out-of-vocabulary classes (Yu et al., NeurIPS 2023).

The image is encoded once: the same frozen features feed the trainable decoders and the
out-of-vocabulary classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovseg.models import postprocess
from ovseg.models.backbones.base import Backbone
from ovseg.models.heads.transformer_decoder import MaskedTransformerDecoder, classification_logits
from ovseg.models.oneformer import encode_sentences
from ovseg.models.pixel_decoders.msdeform import MSDeformAttnPixelDecoder
from ovseg.structures import TextClassifier
from ovseg.text.classifier import TextEncoder
from ovseg.text.vocabulary import Vocabulary
from ovseg.utils.timing import NULL_TIMER, StageTimer

TASKS = ("semantic", "instance", "panoptic", "all")
CLIP_PREFIX = "backbone.clip_model."


class FCCLIP(nn.Module):
    """The FC-CLIP segmentor.

    Args:
        backbone: frozen CLIP wrapper.
        pixel_decoder, predictor: the trainable decoders.
        text_encoder: encodes vocabularies (cached).
        pixel_mean, pixel_std: RGB normalisation on the 0-255 scale.
        size_divisibility: inputs are padded (with 0 after normalisation) to a multiple of this.
        geometric_ensemble_alpha / beta: weight of the out-of-vocabulary branch for seen / unseen
            classes.
        ensemble_on_valid_mask: drop the out-of-vocabulary branch for queries whose mask is empty
            on the CLIP grid (needed by ResNet CLIPs).
        max_score_elements: cap on the semantic scores' C x H x W (0 = none); see
            :func:`ovseg.models.postprocess.semantic_inference`.
        max_postprocess_pixels: post-process larger images at this many pixels and upsample
            the outputs (0 = always at the image's size); see
            :func:`ovseg.models.postprocess.working_size`.
        train_vocabulary: classes seen in training (decides alpha vs beta per test class).
        criterion: the training loss (a callable on outputs and targets), optional.
        context_decoder: DenseCLIP's context-aware prompting (:class:`ovseg.models.prompts.
            ContextDecoder`), optional: refines the classifier per image from the frozen CLIP's
            visual tokens for the in-vocabulary head (the out-of-vocabulary branch keeps the
            plain text classifier).
        oneformer: OneFormer's task token and query-text contrastive loss
            (:class:`ovseg.models.oneformer.OneFormerHead`), optional.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        pixel_decoder: MSDeformAttnPixelDecoder,
        predictor: MaskedTransformerDecoder,
        text_encoder: TextEncoder,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        geometric_ensemble_alpha: float = 0.4,
        geometric_ensemble_beta: float = 0.8,
        ensemble_on_valid_mask: bool = False,
        object_mask_threshold: float = 0.0,
        overlap_threshold: float = 0.8,
        detections_per_image: int = 100,
        max_score_elements: int = 0,
        max_postprocess_pixels: int = 0,
        train_vocabulary: Vocabulary | None = None,
        criterion: nn.Module | None = None,
        context_decoder: nn.Module | None = None,
        oneformer: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.text_encoder = text_encoder
        self.void_embedding = nn.Embedding(1, backbone.embed_dim)
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.size_divisibility = size_divisibility
        self.alpha = geometric_ensemble_alpha
        self.beta = geometric_ensemble_beta
        self.ensemble_on_valid_mask = ensemble_on_valid_mask
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.detections_per_image = detections_per_image
        self.max_score_elements = max_score_elements
        self.max_postprocess_pixels = max_postprocess_pixels
        self.train_vocabulary = train_vocabulary
        self.criterion = criterion
        self.context_decoder = context_decoder
        self.oneformer = oneformer

    # State keys a checkpoint may lack (an FC-CLIP checkpoint has no prompt modules, no
    # OneFormer head, nor a loss's own parameters such as GKC's): they keep their initial
    # values (ovseg.checkpoint.check_model_state).
    optional_state_prefixes = ("text_encoder.", "context_decoder.", "criterion.", "oneformer.")

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ parameters
    def trainable_state_dict(self, include_clip: bool = False) -> dict[str, torch.Tensor]:
        """State dict without the frozen CLIP (unless asked): what ovseg checkpoints store."""
        return {
            k: v
            for k, v in self.state_dict().items()
            if include_clip or not k.startswith(CLIP_PREFIX)
        }

    def frozen_weights_source(self) -> str | None:
        """Where the frozen CLIP's weights come from when a checkpoint leaves them out (None:
        nowhere, they would be random). Read by :func:`ovseg.checkpoint.load_model_state`."""
        b = self.backbone
        return f"open_clip {b.name}/{b.pretrained}" if b.pretrained else None

    # ------------------------------------------------------------------ text
    def encode_vocabulary(self, vocabulary: Vocabulary) -> TextClassifier:
        """Text classifier of ``vocabulary`` (cached per CLIP weights, templates, vocabulary)."""
        return self.text_encoder(vocabulary, device=self.device)

    def classifier_with_void(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(S, D) synonym embeddings -> (S + 1, D) with the normalised learned void embedding
        last."""
        void = F.normalize(self.void_embedding.weight, dim=-1)
        return torch.cat([embeddings.to(void.device, void.dtype), void], 0)

    def refine_classifier(
        self, classifier: torch.Tensor, features: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """DenseCLIP: (S + 1, D) classifier -> (B, S + 1, D), the text rows refined per image
        from the frozen CLIP's [global; dense] tokens, the void row unchanged."""
        visual = self.backbone.visual_context(features["clip_vis_dense"])
        text = self.context_decoder(classifier[:-1], visual)
        void = classifier[-1:].to(text.dtype)[None].expand(text.shape[0], -1, -1)
        return torch.cat([text, void], 1)

    # ------------------------------------------------------------------ image path
    def normalize_and_pad(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """Normalise (3, h, w) 0-255 RGB images, then pad bottom/right with 0 to a common size
        divisible by ``size_divisibility`` (detectron2 ImageList; FC-CLIP normalises first)."""
        hs = max(int(im.shape[-2]) for im in images)
        ws = max(int(im.shape[-1]) for im in images)
        d = self.size_divisibility
        if d > 1:
            hs, ws = (hs + d - 1) // d * d, (ws + d - 1) // d * d
        batch = torch.zeros((len(images), 3, hs, ws), dtype=torch.float32, device=self.device)
        for i, im in enumerate(images):
            im = im.to(self.device, torch.float32)
            batch[i, :, : im.shape[-2], : im.shape[-1]] = (im - self.pixel_mean) / self.pixel_std
        return batch

    def forward_features(
        self,
        x: torch.Tensor,
        classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        num_classes: int,
        aux_outputs: bool = True,
        timer: StageTimer = NULL_TIMER,
        task_ids: torch.Tensor | None = None,
    ) -> tuple[dict, dict[str, torch.Tensor], dict[str, Any]]:
        """Backbone -> pixel decoder -> transformer decoder on a normalised padded batch.

        Args:
            x: (B, 3, Hp, Wp) normalised, zero-padded images.
            classifier: (S + 1, D) synonym embeddings with the void embedding last.
            synonym_index: (S,) int64 class of each row; num_classes: C.
            task_ids: (B,) int64 OneFormer task of each image (training); None: the task
                chosen by :meth:`select_task`. Unused without task conditioning.

        Returns (decoder outputs, backbone features, pixel decoder outputs).
        """
        with timer("backbone"):
            features = self.backbone(x)
        if self.context_decoder is not None:
            with timer("context_decoder"):
                classifier = self.refine_classifier(classifier, features)
        with timer("pixel_decoder"):
            mask_features, multi_scale = self.pixel_decoder(features)
        with timer("transformer_decoder"):
            offset = (
                self.oneformer.query_offset(task_ids, x.shape[0])
                if self.oneformer is not None
                else None
            )
            extra = {"query_offset": offset} if offset is not None else {}
            outputs = self.predictor(
                multi_scale,
                mask_features,
                classifier,
                synonym_index,
                num_classes,
                aux_outputs=aux_outputs,
                **extra,
            )
        return (
            outputs,
            features,
            {"mask_features": mask_features, "multi_scale_features": multi_scale},
        )

    # ------------------------------------------------------------------ the inference seam
    def predict_logits(
        self,
        images: torch.Tensor,
        text_classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        seen_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image path, tensors in and out: the one place it is written. ``Segmenter`` (with
        timers and autocast), the ONNX exporter and ``torch.export`` all call it.

        Args:
            images: (B, 3, Hp, Wp) float, normalised (:meth:`normalize_and_pad`), zero-padded
                to a multiple of ``size_divisibility``.
            text_classifier: (S, D) float, L2-normalised synonym embeddings, class-major
                (:attr:`TextClassifier.embeddings`); the learned void embedding is appended here.
            synonym_index: (S,) int64, the class of each row (:attr:`TextClassifier.synonym_index`).
            seen_mask: (C,) bool, classes seen in training (ensemble weight alpha, else beta).

        Returns:
            ``mask_cls``: (B, Q, C + 1) float log-probabilities, void last (what the
            post-processing consumes); ``mask_logits``: (B, Q, Hp / 4, Wp / 4) float.
        """
        out = self.predict_intermediates(images, text_classifier, synonym_index, seen_mask)
        return out["mask_cls"], out["pred_masks"]

    def predict_intermediates(
        self,
        images: torch.Tensor,
        text_classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        seen_mask: torch.Tensor,
        aux_outputs: bool = False,
        timer: StageTimer = NULL_TIMER,
    ) -> dict[str, Any]:
        """:meth:`predict_logits` keeping every intermediate tensor (tests, analysis, timing).

        Returns a dict with ``mask_cls`` and ``pred_masks`` (the seam's outputs), ``outputs``
        (decoder), ``features`` (backbone), ``mask_features``, ``multi_scale_features``,
        ``text_classifier`` (S + 1, D) and the classifier intermediates of :meth:`classify`.
        Under autocast the decoders run in reduced precision; the classifiers, the ensemble and
        everything after them always run in fp32. ``aux_outputs`` also keeps every decoder
        layer's predictions (the training path of the decoder; same final outputs).
        """
        num_classes = seen_mask.shape[0]
        classifier = self.classifier_with_void(text_classifier)
        outputs, features, pixel = self.forward_features(
            images, classifier, synonym_index, num_classes, aux_outputs=aux_outputs, timer=timer
        )
        # fp32 classifiers: leave autocast only where it is on (an inert autocast region would
        # be a higher-order op that torch.export cannot serialise).
        dev = images.device.type
        fp32 = (
            torch.autocast(dev, enabled=False) if torch.is_autocast_enabled(dev) else nullcontext()
        )
        with fp32, timer("classifiers"):
            features = {k: v.float() for k, v in features.items()}
            outputs = {k: v.float() if torch.is_tensor(v) else v for k, v in outputs.items()}
            cls = self.classify(outputs, features, classifier, synonym_index, seen_mask)
        return {
            **cls,
            "pred_masks": outputs["pred_masks"],
            "outputs": outputs,
            "features": features,
            **pixel,
            "text_classifier": classifier,
        }

    def seen_mask(self, vocabulary: Vocabulary) -> torch.Tensor:
        """(C,) bool: which of ``vocabulary``'s classes share a synonym with the training
        vocabulary (FC-CLIP's ``category_overlapping_mask``); all False without one."""
        seen = (
            vocabulary.seen_mask(self.train_vocabulary)
            if self.train_vocabulary is not None
            else [False] * len(vocabulary)
        )
        return torch.tensor(seen, dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict, timer: StageTimer = NULL_TIMER) -> dict[str, torch.Tensor]:
        """Training forward: ``batch`` has ``images`` (B, 3, H, W) uint8 RGB (already padded to a
        common size) and ``targets`` (per image ``labels`` (N,) int64 and ``masks`` (N, H, W)),
        and optionally ``vocabulary``; returns the weighted loss terms. ``timer`` splits the
        time into backbone / pixel_decoder / transformer_decoder / criterion (matcher
        included; tools/benchmark.py)."""
        if self.criterion is None:
            raise RuntimeError(
                "this model was built without a criterion (model.loss in the config)"
            )
        vocab = batch.get("vocabulary") or self.train_vocabulary
        if vocab is None:
            raise ValueError(
                "training needs a vocabulary: the dataset's classes or model.text.train_vocabulary"
            )
        text = self.encode_vocabulary(vocab)
        images = batch["images"]
        x = self.normalize_and_pad(list(images))
        tasks = self.oneformer.draw_tasks(batch) if self.oneformer is not None else None
        outputs, _, _ = self.forward_features(
            x,
            self.classifier_with_void(text.embeddings),
            text.synonym_index,
            len(vocab),
            task_ids=torch.tensor(tasks, device=self.device) if tasks is not None else None,
            timer=timer,
        )
        with timer("criterion"):
            return self._losses(outputs, x.shape[-2:], batch, text, vocab, tasks)

    def _losses(
        self,
        outputs: dict,
        padded_size: Sequence[int],
        batch: dict,
        text: TextClassifier,
        vocab: Vocabulary,
        tasks: list | None,
    ) -> dict[str, torch.Tensor]:
        """Targets padded to ``padded_size`` (Hp, Wp), then the criterion (and OneFormer's
        contrastive loss) on ``outputs``."""
        hp, wp = padded_size
        # (C,) thing flags of the vocabulary, for matching decoupled thing / stuff queries (OpenSD).
        isthing = torch.tensor(vocab.isthing, dtype=torch.bool, device=self.device)
        targets = []
        for t in batch["targets"]:
            masks = t["masks"].to(self.device)
            padded = torch.zeros((masks.shape[0], hp, wp), dtype=masks.dtype, device=self.device)
            padded[:, : masks.shape[1], : masks.shape[2]] = masks
            labels = t["labels"].to(self.device)
            targets.append({"labels": labels, "masks": padded, "class_is_thing": isthing})
        context = {"model": self, "batch": batch, "text": text, "vocabulary": vocab}
        if self.oneformer is not None:
            return self._oneformer_losses(outputs, targets, tasks, vocab, context)
        return self._criterion(outputs, targets, context)

    def _criterion(self, outputs: dict, targets: list[dict], context: dict) -> dict:
        """The criterion; losses that need more than outputs and targets (GKC: the images for
        the frozen CLIP teacher, the text classifier, the samples' dataset indices) get
        ``context``."""
        if getattr(self.criterion, "wants_context", False):
            return self.criterion(outputs, targets, context=context)
        return self.criterion(outputs, targets)

    def _oneformer_losses(
        self,
        outputs: dict,
        targets: list[dict],
        tasks: list[int],
        vocab: Vocabulary,
        context: dict,
    ) -> dict[str, torch.Tensor]:
        """The criterion on each image's task targets, plus the query-text contrastive loss."""
        head = self.oneformer
        targets = head.targets_for_tasks(targets, tasks, vocab)
        losses = self._criterion(outputs, targets, context)
        if head.contrastive_weight > 0:
            table = head.entry_table(vocab, self.encode_sentences)
            losses["loss_contrastive"] = head.contrastive_loss(
                outputs["queries"], targets, tasks, table
            )
        return losses

    def encode_sentences(self, sentences: Sequence[str]) -> torch.Tensor:
        """(N, D) normalised frozen-CLIP text embeddings of raw sentences (no templates)."""
        return encode_sentences(self.backbone, sentences, self.device)

    def select_task(self, task: str) -> None:
        """Choose the OneFormer task token of the next :meth:`predict_logits` calls from the
        requested output (``"all"``: panoptic); a no-op without task conditioning."""
        if self.oneformer is not None:
            self.oneformer.select_task(task)

    # ------------------------------------------------------------------ inference
    def classify(
        self,
        outputs: dict,
        features: dict[str, torch.Tensor],
        classifier: torch.Tensor,
        synonym_index: torch.Tensor,
        seen_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Geometric ensemble of in-vocabulary and out-of-vocabulary probabilities.

        Args:
            classifier: (S + 1, D) synonym embeddings with the void embedding last.
            synonym_index: (S,) int64; seen_mask: (C,) bool.

        Returns a dict with ``mask_cls`` (B, Q, C + 1) log-probabilities (void last), which the
        post-processing consumes, and the intermediate tensors (for tests and analysis).
        """
        pred_logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        dense = features["clip_vis_dense"]
        mask_for_pooling = F.interpolate(
            pred_masks, size=dense.shape[-2:], mode="bilinear", align_corners=False
        )
        pooled = self.backbone.pool_masks(dense, mask_for_pooling)
        out_logits = classification_logits(
            pooled, classifier, self.backbone.logit_scale, synonym_index, seen_mask.shape[0]
        )
        in_probs = pred_logits[..., :-1].softmax(-1)
        out_probs = out_logits[..., :-1].softmax(-1)
        seen = seen_mask.to(device=in_probs.device, dtype=in_probs.dtype)
        alpha = torch.full_like(in_probs, self.alpha)
        beta = torch.full_like(in_probs, self.beta)
        if self.ensemble_on_valid_mask:
            valid = ((mask_for_pooling > 0).flatten(2).sum(-1) > 0).to(in_probs.dtype).unsqueeze(-1)
            alpha, beta = alpha * valid, beta * valid
        seen_logits = (in_probs ** (1 - alpha) * out_probs**alpha).log() * seen
        unseen_logits = (in_probs ** (1 - beta) * out_probs**beta).log() * (1 - seen)
        ensembled = seen_logits + unseen_logits
        void = F.softmax(pred_logits, dim=-1)[..., -1:]
        final_probs = torch.cat([ensembled.softmax(-1) * (1.0 - void), void], dim=-1)
        return {
            "mask_cls": torch.log(final_probs + 1e-8),
            "final_probs": final_probs,
            "ensembled_logits": ensembled,
            "out_vocab_logits": out_logits,
            "pooled_clip_feature": pooled,
            "mask_for_pooling": mask_for_pooling,
            "in_vocab_probs": in_probs,
            "out_vocab_probs": out_probs,
            "void_prob": void,
        }

    def postprocess(
        self,
        mask_cls: torch.Tensor,
        mask_logits: torch.Tensor,
        padded_size: tuple[int, int],
        image_size: tuple[int, int],
        output_size: tuple[int, int],
        isthing: Sequence[bool],
        task: str,
    ) -> dict[str, Any]:
        """Post-process one image's queries.

        Args:
            mask_cls: (Q, C + 1) log-probabilities.
            mask_logits: (Q, Hp/4, Wp/4) mask logits.
            padded_size: (Hp, Wp) of the model input; image_size: (h, w) before padding;
            output_size: (H, W) of the original image.
            task: "semantic", "instance", "panoptic" or "all".
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")

        # Large images are post-processed at a capped working size (model.test.
        # max_postprocess_pixels) and the outputs brought to the image's size: memory and time
        # stay bounded; at or below the cap this is FC-CLIP's post-processing exactly.
        work = postprocess.working_size(output_size, self.max_postprocess_pixels)
        resize = postprocess.MaskResize(padded_size, image_size, work)
        result: dict[str, Any] = {}
        if task in ("semantic", "all"):
            scores, labels, label_scores = postprocess.semantic_inference(
                mask_cls, mask_logits, resize, self.max_score_elements
            )
            result["sem_seg"] = scores
            if labels is not None:
                result["sem_seg_labels"], result["sem_seg_label_scores"] = labels, label_scores
        if task in ("panoptic", "all"):
            result["panoptic_seg"], result["segments_info"] = postprocess.panoptic_inference(
                mask_cls,
                mask_logits,
                resize,
                isthing,
                self.object_mask_threshold,
                self.overlap_threshold,
            )
        if task in ("instance", "all"):
            result["instances"] = postprocess.instance_inference(
                mask_cls, mask_logits, resize, isthing, self.detections_per_image
            )
        if work != tuple(output_size):
            result = postprocess.upsample_outputs(result, tuple(output_size))
        return result
