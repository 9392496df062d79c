"""OneFormer's query-text contrastive loss: symmetric InfoNCE between one vector per image (its
queries) and one vector per image (its text entries), over the global batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ovseg.utils import dist


def symmetric_info_nce(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """CE(image -> text) + CE(text -> image), the positives on the diagonal of the global batch.

    Under DDP both sides are gathered from every rank (the image side with its gradient), each
    rank scores its own rows against all columns, so the mean of the ranks' losses (what DDP's
    gradient averaging optimises) equals one process's loss on the whole batch.

    Args:
        image: (B, K) this rank's image vectors (any norm; L2-normalised here).
        text: (B, K) this rank's text vectors, row i the positive of image row i.
        logit_scale: scalar log of the inverse temperature; its ``exp`` is clamped at 100.

    Returns:
        the scalar loss (the sum of both directions, as OneFormer).
    """
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(f"image {tuple(image.shape)} and text {tuple(text.shape)} must be (B, K)")
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    all_image = dist.all_gather_with_grad(image)
    all_text = dist.all_gather_with_grad(text)
    if all_image.shape[0] != image.shape[0] * dist.get_world_size():
        raise ValueError("every rank must contribute the same number of images")
    scale = torch.clamp(logit_scale.float().exp(), max=100)
    labels = torch.arange(image.shape[0], device=image.device) + image.shape[0] * dist.get_rank()
    loss_image = F.cross_entropy(scale * image @ all_text.t(), labels)
    loss_text = F.cross_entropy(scale * text @ all_image.t(), labels)
    return loss_image + loss_text
