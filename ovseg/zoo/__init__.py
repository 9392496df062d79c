"""The model zoo: named models with checksummed, resumable, cached downloads.

>>> from ovseg import zoo
>>> entry = zoo.get_entry("fcclip-convnext-large-coco")   # config, urls, sha256, clip, metrics
>>> path = zoo.download("fcclip-convnext-large-coco")     # verified file in $OVSEG_HOME/checkpoints

Command line: ``python -m ovseg.zoo list | info NAME | download NAME [--zoo-file F]``.
Users add models with a YAML zoo file (``--zoo-file F`` or ``$OVSEG_ZOO``) in the format of the
built-in ``manifest.yaml``. This package imports no torch (only ``publish_model`` does, lazily).
"""

from ovseg.zoo.cli import describe, main, publish_main
from ovseg.zoo.downloader import (
    ChecksumError,
    DiskFullError,
    DownloadError,
    OfflineError,
    cached_path,
    checkpoint_dir,
    download,
    is_offline,
    ovseg_home,
    sha256_file,
)
from ovseg.zoo.lock import FileLock, LockTimeout
from ovseg.zoo.registry import (
    MANIFEST,
    UnknownModelError,
    ZooEntry,
    ZooFileError,
    get_entry,
    list_entries,
    load_zoo,
    load_zoo_file,
    markdown_table,
)


def publish_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - lazy torch import
    """See :func:`ovseg.zoo.publish.publish_model` (imported lazily: it needs torch)."""
    from ovseg.zoo.publish import publish_model as _publish_model

    return _publish_model(*args, **kwargs)


__all__ = [
    "MANIFEST",
    "ChecksumError",
    "DiskFullError",
    "DownloadError",
    "FileLock",
    "LockTimeout",
    "OfflineError",
    "UnknownModelError",
    "ZooEntry",
    "ZooFileError",
    "cached_path",
    "checkpoint_dir",
    "describe",
    "download",
    "get_entry",
    "is_offline",
    "list_entries",
    "load_zoo",
    "load_zoo_file",
    "main",
    "markdown_table",
    "ovseg_home",
    "publish_main",
    "publish_model",
    "sha256_file",
]
