"""Turn a training checkpoint into a published zoo file and the zoo entry that names it.

ovseg's checkpoint format (written by ``ovseg.checkpoint``, read by the loader) is a plain
dict that loads with ``torch.load(path, map_location="cpu", weights_only=True)``::

    {"format": "ovseg", "version": 1,
     "config": "<resolved YAML string>",
     "model": {name: tensor},   # trainable weights (+ frozen CLIP only without a named source)
     "meta": {...},             # primitives: versions, git hash, iteration, clip model/tag, ...
     # training checkpoints only:
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": ..., "iteration": int,
     "sampler": ...}

Publishing keeps ``format``, ``version``, ``config``, ``model`` and ``meta`` and writes
``NAME-<sha256[:8]>.pth`` atomically (temporary file + rename).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovseg.utils.io import atomic_write_bytes

CHECKPOINT_FORMAT = "ovseg"
CHECKPOINT_VERSION = 1
PUBLISHED_KEYS = ("format", "version", "config", "model", "meta")


@dataclass
class PublishedModel:
    """What :func:`publish_model` wrote.

    Attributes:
        path: the published file ``OUT/NAME-<sha256[:8]>.pth``.
        sha256: full hex sha256 of that file.
        size: its size in bytes.
        stripped: top-level keys of the input that were left out (optimizer state, ...).
        entry: the zoo entry as a dict (``{name: fields}``), ready for a zoo file.
        entry_yaml: the same as YAML text to paste.
    """

    path: Path
    sha256: str
    size: int
    stripped: list[str]
    entry: dict[str, Any]
    entry_yaml: str


def _clip_from(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    """The CLIP model/tag, if the checkpoint's meta records it (``meta["clip"]``)."""
    clip = ckpt.get("meta", {}).get("clip") if isinstance(ckpt.get("meta"), dict) else None
    if isinstance(clip, dict) and isinstance(clip.get("model"), str):
        return {"model": clip["model"], "pretrained": clip.get("pretrained")}
    return None


def publish_model(
    checkpoint: str | Path,
    name: str,
    out_dir: str | Path | None = None,
    url_prefix: str | None = None,
    clip: dict[str, Any] | None = None,
    config: str | None = None,
    metrics: dict[str, Any] | None = None,
) -> PublishedModel:
    """Strip a checkpoint to a publishable model file and describe it as a zoo entry.

    Args:
        checkpoint: an ovseg checkpoint (training or model-only), see the module docstring.
        name: model name, e.g. ``"my-fcclip-tiny"``; also the file name's stem.
        out_dir: where to write the file (default: the checkpoint's directory).
        url_prefix: where the file will be hosted; the entry's URL is ``url_prefix/FILE``
            (default: a ``file://`` URL of the written file).
        clip: ``{"model", "pretrained"}`` of the frozen CLIP, if not in ``meta["clip"]``.
        config: the entry's ``config`` (relative to ``configs/``); the checkpoint holds its
            resolved config anyway.
        metrics: the entry's ``metrics`` ``{dataset: {metric: value}}``.

    Returns:
        The written file, its hash and size, and the zoo entry.

    Raises:
        ValueError: the file is not an ovseg checkpoint (names what it found) or ``name`` is
            not usable as a file name.
    """
    import torch
    import yaml

    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ValueError(f"model name {name!r} must be a plain name without '/', '\\' or spaces")
    checkpoint = Path(checkpoint)
    ckpt = _read_ovseg_checkpoint(checkpoint)
    published = {k: ckpt[k] for k in PUBLISHED_KEYS if k in ckpt}
    published.setdefault("meta", {})
    stripped = sorted(str(k) for k in ckpt if k not in PUBLISHED_KEYS)

    out = Path(out_dir) if out_dir is not None else checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(published, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    final = atomic_write_bytes(out / f"{name}-{digest[:8]}.pth", data)
    size = final.stat().st_size

    url = f"{url_prefix.rstrip('/')}/{final.name}" if url_prefix else final.resolve().as_uri()
    fields: dict[str, Any] = {"config": config, "urls": [url], "sha256": digest, "size": size}
    fields["format"] = CHECKPOINT_FORMAT
    clip = clip or _clip_from(ckpt)
    if clip:
        fields["clip"] = {"model": clip["model"], "pretrained": clip.get("pretrained")}
    fields["contents"] = "ovseg checkpoint: resolved config + trainable weights" + (
        "; frozen CLIP from open_clip" if clip and clip.get("pretrained") else ""
    )
    fields["filename"] = final.name
    fields["license"] = ""
    fields["source"] = ""
    fields["metrics"] = dict(metrics or {})
    entry = {name: fields}
    entry_yaml = yaml.safe_dump(entry, sort_keys=False, default_flow_style=False)
    return PublishedModel(final, digest, size, stripped, entry, entry_yaml)


FCCLIP_CITATION = """\
@inproceedings{yu2023fcclip,
  title={Convolutions Die Hard: Open-Vocabulary Segmentation with Single Frozen Convolutional CLIP},
  author={Yu, Qihang and He, Ju and Deng, Xueqing and Shen, Xiaohui and Chen, Liang-Chieh},
  booktitle={NeurIPS},
  year={2023}
}"""


@dataclass
class HubFolder:
    """What :func:`write_hub_folder` wrote: ``folder`` with ``model.safetensors`` (its
    ``sha256`` and ``size``), ``config.yaml`` and ``README.md`` (the model card)."""

    folder: Path
    sha256: str
    size: int
    stripped: list[str]


def _read_ovseg_checkpoint(checkpoint: Path) -> dict[str, Any]:
    """An ovseg checkpoint dict (``torch.load(weights_only=True)``), or a ValueError naming it."""
    import torch

    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"{checkpoint} does not load with torch.load(weights_only=True): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = (
            f"format={ckpt.get('format')!r}, keys {sorted(map(str, ckpt))[:8]}"
            if isinstance(ckpt, dict)
            else type(ckpt).__name__
        )
        raise ValueError(
            f"{checkpoint} is not an ovseg checkpoint ({found}); expected a dict with "
            f"format='ovseg' as written by ovseg's trainer or Segmenter.save()"
        )
    missing = [k for k in ("version", "config", "model") if k not in ckpt]
    if missing:
        raise ValueError(f"{checkpoint}: ovseg checkpoint lacks {', '.join(missing)}")
    if not isinstance(ckpt["model"], dict) or not ckpt["model"]:
        raise ValueError(f"{checkpoint}: 'model' must be a non-empty state dict")
    return ckpt


def model_card(
    name: str,
    config_yaml: str,
    clip: dict[str, Any] | None,
    includes_clip: bool,
    dataset: str,
    metrics: dict[str, Any],
    repo_id: str | None = None,
) -> str:
    """The Hub model card (``README.md``): YAML front matter, architecture, CLIP, training data,
    benchmark numbers, how to load it, licence (Apache-2.0) and the FC-CLIP citation."""
    import yaml

    cfg = yaml.safe_load(config_yaml) or {}
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    backbone = model.get("backbone", {}) or {}
    decoder = model.get("decoder", {}) or {}
    pixel = model.get("pixel_decoder", {}) or {}
    clip = clip or {"model": backbone.get("name"), "pretrained": backbone.get("pretrained")}
    tag = clip.get("pretrained") or "none (random or stored in this file)"
    front = {
        "license": "apache-2.0",
        "library_name": "ovseg",
        "pipeline_tag": "image-segmentation",
        "tags": ["open-vocabulary-segmentation", "panoptic-segmentation", "fc-clip", "clip"],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    lines += [
        "An open-vocabulary segmentation model (FC-CLIP design) for ovseg: name any classes "
        "at run time; it predicts panoptic, instance and semantic segmentation.",
        "",
        "## Architecture",
        "",
        f"- segmentor: `{model.get('type', 'fcclip')}` (a single frozen convolutional CLIP "
        "backbone, mask-pooled in- and out-of-vocabulary classifiers, geometric ensemble)",
        f"- pixel decoder: `{pixel.get('type', 'msdeform')}`, {pixel.get('conv_dim', '?')} "
        f"channels, {pixel.get('num_layers', '?')} layers",
        f"- transformer decoder: `{decoder.get('type', 'masked_attention')}`, "
        f"{decoder.get('num_queries', '?')} queries, {decoder.get('num_layers', '?')} layers, "
        f"hidden {decoder.get('hidden_dim', '?')}",
        f"- CLIP (open_clip): `{clip.get('model')}`, pretrained tag `{tag}`; frozen. "
        + (
            "Its weights are in `model.safetensors`."
            if includes_clip
            else "Its weights are not in this repository: open_clip loads them by that tag."
        ),
        "",
        "## Training data",
        "",
        dataset or "not stated",
        "",
        "## Results",
        "",
    ]
    if metrics:
        lines += ["| dataset | metric | value |", "|---|---|---|"]
        for ds, values in metrics.items():
            items = values.items() if isinstance(values, dict) else [("", values)]
            lines += [f"| {ds} | {m} | {v} |" for m, v in items]
    else:
        lines.append("No benchmark numbers were given when this model was published.")
    where = f"hf://{repo_id}" if repo_id else "hf://OWNER/REPO"
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from ovseg import Segmenter",
        f'seg = Segmenter.from_pretrained("{where}")  # pin a revision: "{where}@<commit>"',
        'pred = seg.predict("image.jpg", "zebra; dry grass, hay [stuff]; sky [stuff]")',
        "```",
        "",
        "Files: `model.safetensors` (trainable weights",
        "+ the frozen CLIP when no open_clip tag provides it; the resolved config is in its "
        "metadata too), `config.yaml` (the resolved ovseg config).",
        "",
        "## Licence",
        "",
        "Apache-2.0 (the licence of FC-CLIP's code and of ovseg).",
        "",
        "## Citation",
        "",
        "```bibtex",
        FCCLIP_CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def write_hub_folder(
    checkpoint: str | Path,
    folder: str | Path,
    name: str | None = None,
    clip: dict[str, Any] | None = None,
    dataset: str | None = None,
    metrics: dict[str, Any] | None = None,
    repo_id: str | None = None,
) -> HubFolder:
    """Write a Hub-ready folder from an ovseg checkpoint: ``model.safetensors`` (the checkpoint's
    ``model`` weights: trainable ones, plus the frozen CLIP only when the checkpoint holds it),
    ``config.yaml`` (resolved config) and ``README.md`` (:func:`model_card`). Each file is
    written atomically; ``Segmenter.from_pretrained(folder)`` loads the result.

    Raises:
        ValueError: not an ovseg checkpoint (names what it found).
    """
    from ovseg.checkpoint.io import save_safetensors_checkpoint
    from ovseg.utils.io import atomic_write_text
    from ovseg.zoo.downloader import sha256_file
    from ovseg.zoo.hub import HUB_CARD, HUB_CONFIG, HUB_WEIGHTS

    checkpoint = Path(checkpoint)
    ckpt = _read_ovseg_checkpoint(checkpoint)
    folder = Path(folder)
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    clip = clip or _clip_from(ckpt)
    if dataset is None:
        import yaml

        cfg = yaml.safe_load(ckpt["config"]) or {}
        seen = ((cfg.get("model") or {}).get("text") or {}).get("train_vocabulary")
        dataset = f"`{seen}` classes (the config's model.text.train_vocabulary)" if seen else ""
    weights = save_safetensors_checkpoint(folder / HUB_WEIGHTS, ckpt)
    atomic_write_text(folder / HUB_CONFIG, ckpt["config"])
    card = model_card(
        name or checkpoint.stem,
        ckpt["config"],
        clip,
        bool(meta.get("includes_clip", False)),
        dataset,
        metrics or {},
        repo_id,
    )
    atomic_write_text(folder / HUB_CARD, card)
    stripped = sorted(str(k) for k in ckpt if k not in PUBLISHED_KEYS)
    return HubFolder(folder, sha256_file(weights), weights.stat().st_size, stripped)


def push_to_hub(folder: str | Path, repo_id: str, token: str | None = None) -> str:
    """Upload a Hub folder with ``HfApi().upload_folder``; returns the commit's URL.

    Raises:
        ValueError: no token (``HF_TOKEN`` or ``huggingface-cli login``).
    """
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise ValueError(
            f"--push {repo_id}: no Hugging Face token; set HF_TOKEN or run `hf auth login`"
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="ovseg model")
    return str(getattr(info, "commit_url", info))
