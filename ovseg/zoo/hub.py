"""Hugging Face Hub sources: ``hf://OWNER/REPO[@REVISION][/FILE]``, fetched with ``huggingface_hub``.

``huggingface_hub.hf_hub_download`` does the transfer and owns the cache (``$HF_HUB_CACHE``,
default ``~/.cache/huggingface/hub``: ``models--OWNER--REPO/{blobs,refs,snapshots/<commit>/FILE}``);
ovseg adds its sha256 check on top. A file whose bytes do not match is refused, and whatever this
call added to the Hub cache (the blob and its snapshot link) is removed again, so a later run does
not pick up the bad file.

``HF_HUB_OFFLINE=1`` (or ovseg's ``OVSEG_OFFLINE=1``) reads the cache only; both, and
``HF_HUB_CACHE`` / ``HF_ENDPOINT``, are read at call time (``huggingface_hub`` reads them once,
at import).

Weights from the Hub are safetensors only (:data:`HUB_WEIGHT_SUFFIXES`): nothing is unpickled.
A plain ``hf://OWNER/REPO`` names a repository in ovseg's own layout (:data:`HUB_LAYOUT`), as
``tools/publish_model.py --hub-folder`` writes it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ovseg.utils.env import TRUE, env_flag
from ovseg.zoo.downloader import ChecksumError, DownloadError, sha256_file

HUB_SCHEME = "hf://"
HUB_WEIGHTS = "model.safetensors"
HUB_CONFIG = "config.yaml"
HUB_CARD = "README.md"
HUB_LAYOUT = (HUB_WEIGHTS, HUB_CONFIG)
"""The files of a repository in ovseg's layout (the model card is not needed to load it)."""
HUB_WEIGHT_SUFFIXES = (".safetensors",)

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HUB_RE = re.compile(
    rf"^hf://(?P<owner>{_REPO_PART})/(?P<repo>{_REPO_PART})(?:@(?P<rev>[A-Za-z0-9._-]+))?"
    r"(?:/(?P<file>[^@]+))?$"
)


class HubError(DownloadError):
    """A Hub file could not be fetched (offline and not cached, not found, network)."""


@dataclass(frozen=True)
class HubRef:
    """A parsed ``hf://`` reference.

    Attributes:
        repo_id: ``OWNER/REPO``.
        revision: a commit hash (pinned), branch or tag; None means ``main``.
        filename: a file inside the repository, or None for a repository in ovseg's layout.
    """

    repo_id: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{HUB_SCHEME}{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")

    def with_file(self, filename: str) -> HubRef:
        return HubRef(self.repo_id, self.revision, filename)


def is_hub_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(HUB_SCHEME)


def parse_hub_url(url: str) -> HubRef:
    """``hf://OWNER/REPO[@REVISION][/FILE]`` -> :class:`HubRef`.

    REVISION is a commit hash (pin one), a branch or a tag without ``/``. ``FILE`` may name a
    subfolder; ``..`` and absolute parts are refused.

    Raises:
        ValueError: naming the URL and the expected form.
    """
    m = _HUB_RE.match(url)
    if not m:
        raise ValueError(
            f"{url!r} is not a Hub reference: expected hf://OWNER/REPO[@REVISION][/FILE]"
        )
    rev, file = m.group("rev"), m.group("file")
    if file is not None:
        parts = file.split("/")
        if any(p in ("", ".", "..") for p in parts) or file.startswith("/"):
            raise ValueError(f"{url!r}: the file {file!r} must be a relative path without '..'")
    return HubRef(f"{m.group('owner')}/{m.group('repo')}", rev, file)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (huggingface_hub's own reading: 1/true/yes/on, anything else off) or
    ``OVSEG_OFFLINE`` (:func:`~ovseg.utils.env.env_flag`: a bad value is an error), read now."""
    hf = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE
    return hf or env_flag("OVSEG_OFFLINE", False)


def hub_cache_dir() -> str | None:
    """``$HF_HUB_CACHE`` (or ``$HF_HOME/hub``) read now; None leaves huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _require_hub():  # noqa: ANN202 - the module
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError:
        raise HubError(
            "hf:// sources need huggingface_hub: pip install -e . (it is a core dependency)"
        ) from None
    return huggingface_hub


def _repo_folder(cache_dir: str | None, repo_id: str) -> Path:
    hub = _require_hub()
    root = cache_dir or hub.constants.HF_HUB_CACHE
    return Path(root) / ("models--" + repo_id.replace("/", "--"))


def _snapshot(folder: Path) -> set[Path]:
    """Every file and link under a repository's cache folder (what a download may add)."""
    if not folder.exists():
        return set()
    return {p for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def _remove_added(folder: Path, before: set[Path], existed: bool) -> None:
    """Undo a download: delete what appeared under the repository's cache ``folder`` since
    ``before``; a folder this call created goes entirely (with its huggingface_hub lock folder)."""
    if not existed:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.parent / ".locks" / folder.name, ignore_errors=True)
        return
    for p in sorted(_snapshot(folder) - before, reverse=True):
        if p.parent.name != "refs":  # a ref names a commit, not content
            p.unlink(missing_ok=True)
    for d in sorted((d for d in folder.rglob("*") if d.is_dir()), reverse=True):
        if not any(d.iterdir()) and d.name != "refs":
            d.rmdir()


def hub_download(
    ref: HubRef,
    sha256: str | None = None,
    *,
    cache_dir: str | Path | None = None,
    what: str | None = None,
) -> Path:
    """The local path of one Hub file, fetched into the Hub cache if needed, then sha256-checked.

    Args:
        ref: the file (``ref.filename`` must be set).
        sha256: the expected lowercase hex digest; None skips ovseg's check (huggingface_hub
            still names the blob by its etag).
        cache_dir: the Hub cache; default ``$HF_HUB_CACHE`` / huggingface_hub's default.
        what: how messages name the file (e.g. the zoo entry); default the reference.

    Raises:
        HubError: offline and not cached, not found, or a network failure (one line).
        ChecksumError: the bytes do not match ``sha256``; what this call fetched is removed.
    """
    if ref.filename is None:
        raise HubError(f"{ref}: name a file (hf://OWNER/REPO[@REVISION]/FILE)")
    hub = _require_hub()
    what = what or str(ref)
    cache = str(Path(cache_dir).expanduser()) if cache_dir is not None else hub_cache_dir()
    folder = _repo_folder(cache, ref.repo_id)
    existed = folder.exists()
    before = _snapshot(folder)
    offline = hub_offline()
    # huggingface_hub froze HF_HUB_OFFLINE when first imported; follow the environment of now.
    hub.constants.HF_HUB_OFFLINE = offline
    try:
        local = hub.hf_hub_download(
            ref.repo_id,
            ref.filename,
            revision=ref.revision,
            cache_dir=cache,
            local_files_only=offline,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except hub.errors.LocalEntryNotFoundError as e:
        if offline:
            raise HubError(
                f"{what}: {ref} is not in the Hub cache ({folder}) and HF_HUB_OFFLINE/"
                "OVSEG_OFFLINE forbid downloading it; unset them or fill the cache elsewhere"
            ) from None
        raise HubError(f"{what}: cannot reach the Hub for {ref} and it is not cached") from e
    except hub.errors.RevisionNotFoundError:
        raise HubError(f"{what}: revision {ref.revision!r} not found in {ref.repo_id}") from None
    except hub.errors.EntryNotFoundError:
        raise HubError(f"{what}: {ref.filename} not found in {ref.repo_id}") from None
    except hub.errors.RepositoryNotFoundError:
        raise HubError(f"{what}: repository {ref.repo_id} not found (or private)") from None
    except (hub.errors.HfHubHTTPError, OSError) as e:
        raise HubError(f"{what}: fetching {ref} failed: {type(e).__name__}: {e}") from None
    path = Path(local)
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            _remove_added(folder, before, existed)
            fetched = (
                "the fetched file was removed from the Hub cache"
                if path not in before
                else f"the cached file {path} was left in place (it was there before)"
            )
            where = "" if what == str(ref) else f" for {ref}"
            raise ChecksumError(
                f"{what}: sha256 mismatch{where}: expected {sha256}, got {actual}; {fetched}. "
                "Pin the revision the sha256 was computed for, or fix the entry.",
                expected=sha256,
                actual=actual,
            )
    return path


def fetch_hub_url(url: str, sha256: str | None = None, *, what: str | None = None) -> Path:
    """The local file of an ``hf://`` URL: the named file, or a plain repository's weights."""
    ref = parse_hub_url(url)
    if ref.filename is None:
        weights = hub_download(ref.with_file(HUB_WEIGHTS), sha256, what=what)
        hub_download(ref.with_file(HUB_CONFIG), what=what)
        return weights
    return hub_download(ref, sha256, what=what)
