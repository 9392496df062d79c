"""Image input and label-map output.

:func:`load_image` turns a path, a PIL image or an array into the one format the model takes:
(H, W, 3) uint8 RGB. Files are read the way detectron2's ``read_image(path, format="RGB")`` reads
them (what FC-CLIP's evaluation does): ``PIL.Image.open`` -> EXIF orientation applied ->
``convert("RGB")``. Modes that ``convert("RGB")`` would mangle are handled explicitly:

* 16-bit grey ("I;16*", "I"): scaled to 8 bit by ``round(v / 257)`` (65535 -> 255), where
  ``convert`` would clip every value above 255 to white.
* 32-bit float ("F"): the array rule below.

Array rule (also for ``ndarray`` inputs): shapes (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA
(alpha dropped, as ``convert("RGB")`` does); dtypes uint8 (as is), uint16 (/257), bool (x255), other
integers (must lie in [0, 255]) and floats (must lie in [0, 1]; x255 and rounded). Anything else
raises :class:`ImageLoadError` with the reason and what to pass instead.

The label-map writers (:func:`save_label_png`, :func:`id2rgb`) write what the demo hands back:
class-index, COCO panoptic (``rgb2id``) and instance-index PNGs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovseg.utils.io import atomic_write
from ovseg.utils.panoptic_ids import id2rgb, rgb2id  # noqa: F401 (re-exported)

ImageInput = str | os.PathLike | Image.Image | np.ndarray

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)  # fmt: skip

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageLoadError(ValueError):
    """An image that cannot be read or converted; the message names the source and the reason."""


def load_image(src: ImageInput, max_pixels: int = 0) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array.

    Args:
        src: a file path, a ``PIL.Image.Image`` or a numpy array (see the module docstring for the
            accepted shapes, dtypes and how each is converted).
        max_pixels: refuse images with more pixels than this (0 = no limit); a file is checked
            from its header, before it is decoded.

    Returns:
        (H, W, 3) uint8 RGB, C-contiguous, a new array the caller may modify.

    Raises:
        ImageLoadError: missing, empty, unreadable or corrupt file; an unsupported array shape,
            dtype or value range. The message names the path (or the array) and the reason.
    """
    if isinstance(src, (str, os.PathLike)):
        return _load_path(Path(src), max_pixels)
    if isinstance(src, Image.Image):
        check_pixels(src.height, src.width, max_pixels, "PIL image")
        return _from_pil(src, "PIL image")
    if isinstance(src, np.ndarray):
        if src.ndim >= 2:
            check_pixels(src.shape[0], src.shape[1], max_pixels, "image array")
        return _from_array(src, "image array")
    raise ImageLoadError(
        f"cannot read an image from {type(src).__name__}: pass a file path, a PIL.Image or an "
        "(H, W, 3) uint8 RGB numpy array"
    )


def check_pixels(h: int, w: int, max_pixels: int, name: str) -> None:
    """Raise :class:`ImageLoadError` if an ``h`` x ``w`` image exceeds ``max_pixels`` (0 = no
    limit). Bounds memory: every output at the input resolution grows with its pixel count."""
    if max_pixels and h * w > max_pixels:
        raise ImageLoadError(
            f"cannot read image {name}: {w}x{h} = {h * w / 1e6:.1f} MP is above the limit of "
            f"{max_pixels / 1e6:.1f} MP (model.test.max_image_pixels; raise it, or downscale the "
            "image first)"
        )


def _load_path(path: Path, max_pixels: int = 0) -> np.ndarray:
    name = str(path)
    if not path.exists():
        raise ImageLoadError(f"cannot read image {name}: file not found")
    if path.is_dir():
        raise ImageLoadError(f"cannot read image {name}: it is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImageLoadError(f"cannot read image {name}: {e.strerror or e}") from None
    if size == 0:
        raise ImageLoadError(f"cannot read image {name}: the file is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            check_pixels(im.height, im.width, max_pixels, name)  # header only: not decoded yet
            im.load()  # decode now, inside the try: PIL decodes lazily
            return _from_pil(im, name)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"cannot read image {name}: not an image format Pillow recognises (corrupt file?)"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"cannot read image {name}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        # Truncated or corrupt image data surfaces as OSError ("image file is truncated"),
        # SyntaxError (broken headers in some plugins) or ValueError.
        reason = str(e) or type(e).__name__
        raise ImageLoadError(
            f"cannot read image {name}: corrupt or truncated data ({reason})"
        ) from None


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, as detectron2's ``_apply_exif_orientation`` does.

    A malformed EXIF block is ignored (the image is kept as stored), like detectron2.
    """
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - bad EXIF must not make a readable image unreadable
        return im
    return out if out is not None else im


def _from_pil(im: Image.Image, name: str) -> np.ndarray:
    im = _exif_transpose(im)
    if im.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(im)
        # "I" is 32-bit signed; 16-bit PNGs/TIFFs open as "I;16*" (or "I" in older Pillow).
        arr = np.clip(arr.astype(np.int64), 0, 65535).astype(np.uint16)
        return _from_array(arr, name)
    if im.mode == "F":
        return _from_array(np.asarray(im), name)
    if im.mode != "RGB":
        try:
            im = im.convert("RGB")
        except (ValueError, OSError) as e:
            raise ImageLoadError(
                f"cannot convert image {name} from mode {im.mode!r} to RGB: {e}"
            ) from None
    return np.array(im, dtype=np.uint8, copy=True)


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise ImageLoadError(
            f"{name} has shape {arr.shape}, which looks channel-first: pass (H, W, 3), e.g. "
            "arr.transpose(1, 2, 0)"
        )
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
        raise ImageLoadError(
            f"{name} has shape {arr.shape}: expected (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageLoadError(f"{name} is empty: shape {arr.shape}")
    arr = _to_uint8(arr, name)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[-1] == 4:
        arr = arr[:, :, :3]  # drop alpha without compositing, as PIL's convert("RGB") does
    return np.array(arr, dtype=np.uint8, order="C", copy=True)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.round(arr.astype(np.float32) / 257.0).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageLoadError(
                f"{name} is {arr.dtype} with values in [{lo}, {hi}]: integer images must lie in "
                "[0, 255] (or be uint16, scaled by 1/257)"
            )
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{name} contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise ImageLoadError(
                f"{name} is {arr.dtype} with values in [{lo:g}, {hi:g}]: float images must lie in "
                "[0, 1]; divide by 255 or pass uint8"
            )
        return np.round(arr.astype(np.float64) * 255.0).astype(np.uint8)
    raise ImageLoadError(f"{name} has unsupported dtype {arr.dtype}: pass uint8 RGB")


# --------------------------------------------------------------------------- label maps
def save_label_png(path: str | os.PathLike, labels: np.ndarray, bits: int | None = None) -> None:
    """Write a label map losslessly as a PNG.

    Args:
        path: destination ``.png``.
        labels: (H, W) non-negative integers < 65536 (grey PNG), or (H, W, 3) uint8 (RGB PNG).
        bits: 8 or 16 for a grey PNG of that depth; None picks 8 when every value fits, else 16.
    """
    labels = np.asarray(labels)
    if labels.ndim == 3 and labels.shape[-1] == 3 and labels.dtype == np.uint8:
        save_array(path, labels, format="PNG")
        return
    if labels.ndim != 2:
        raise ValueError(f"label map must be (H, W), got shape {labels.shape}")
    if bits not in (None, 8, 16):
        raise ValueError(f"bits must be 8, 16 or None, got {bits}")
    lo, hi = (int(labels.min()), int(labels.max())) if labels.size else (0, 0)
    limit = 255 if bits == 8 else 65535
    if lo < 0 or hi > limit:
        raise ValueError(f"label values must lie in [0, {limit}] for this PNG, got [{lo}, {hi}]")
    if bits == 8 or (bits is None and hi <= 255):
        save_array(path, labels.astype(np.uint8), format="PNG")
    else:
        save_array(path, labels.astype(np.uint16), format="PNG")


def save_array(path: str | os.PathLike, array: np.ndarray, format: str | None = None) -> None:
    """Write an image or label array with Pillow, atomically; the format follows the suffix
    (``.png``, 16-bit ``.tif``, ``.jpg`` with Pillow's defaults) unless ``format`` is given."""
    path = Path(path)
    fmt = format or Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path} from its suffix")
    img = Image.fromarray(np.ascontiguousarray(array))
    with atomic_write(path) as f:
        img.save(f, format=fmt)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """A label / panoptic PNG (or TIFF) as stored, without mode conversion: palette indices
    stay indices, 16-bit stays 16-bit.

    Raises:
        ImageLoadError: missing, truncated or not an image (the message names the file).
    """
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"cannot read label file {path}: {e}") from None


# -- test-time resize, exactly as detectron2's ResizeShortestEdge in FC-CLIP's evaluation --


def shortest_edge_size(h: int, w: int, short: int, max_size: int = 0) -> tuple[int, int]:
    """Output (h, w): short side -> ``short``, long side capped at ``max_size`` (0: no cap),
    each rounded as ``int(x + 0.5)`` (detectron2's ``ResizeShortestEdge.get_output_shape``)."""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max_size > 0 and max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def check_resizable(h: int, w: int, short: int, max_size: int = 0) -> None:
    """Raise :class:`ImageLoadError` when the test resize of an ``h`` x ``w`` image would give a
    side of 0 px (a 1 x 5000 strip: the long-side cap shrinks the short side below one pixel)."""
    nh, nw = shortest_edge_size(h, w, short, max_size)
    if nh < 1 or nw < 1:
        raise ImageLoadError(
            f"image of {w}x{h} px is too elongated for the test resize (short side to {short}, "
            f"long side at most {max_size}) which would make it {nw}x{nh} px: crop or pad it to "
            "a less extreme aspect ratio"
        )


def resize_shortest_edge(image: np.ndarray, short: int, max_size: int = 0) -> np.ndarray:
    """Resize an (H, W, 3) uint8 RGB image with PIL bilinear (antialiased when shrinking), the
    filter detectron2 applies to uint8 images. Returns (h, w, 3) uint8."""
    h, w = image.shape[:2]
    nh, nw = shortest_edge_size(h, w, short, max_size)
    if (nh, nw) == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
