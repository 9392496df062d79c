"""``python -m ovseg.zoo list | info NAME | download NAME | verify [NAME ...]`` and
``tools/publish_model.py``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ovseg.zoo.downloader import (
    DownloadError,
    cached_path,
    check_cached,
    download,
    is_offline,
    partial_path,
    read_sidecar,
)
from ovseg.zoo.lock import LockTimeout
from ovseg.zoo.registry import (
    ZooEntry,
    ZooFileError,
    format_metrics,
    format_size,
    get_entry,
    list_entries,
    markdown_table,
    zoo_files,
)

EPILOG = """examples:
  python -m ovseg.zoo list
  python -m ovseg.zoo list --markdown            # the README's table
  python -m ovseg.zoo info fcclip-convnext-large-coco
  python -m ovseg.zoo download fcclip-convnext-large-coco
  python -m ovseg.zoo download my-model --zoo-file my_zoo.yaml
  OVSEG_OFFLINE=1 python -m ovseg.zoo download NAME   # only checks the cache
  python -m ovseg.zoo verify                      # re-hash every cached file (exit 1 if any is bad)

environment:
  OVSEG_HOME     cache root (default ~/.cache/ovseg; weights go to $OVSEG_HOME/checkpoints)
  OVSEG_ZOO      extra zoo files, separated by the OS path separator
  OVSEG_OFFLINE  1 = never download, use the cache only
"""


def _table(entries: Sequence[ZooEntry], cache_dir: str | None) -> str:
    rows = [("name", "task / dataset", "size", "sha256", "cached", "metrics")]
    for e in entries:
        cached = "yes" if cached_path(e, cache_dir).is_file() else "no"
        verified = "verified" if e.verified else "unverified"
        task = " / ".join(t for t in (e.task, e.dataset) if t)
        metrics = format_metrics(e.metrics, datasets=("ade20k", "coco")) or format_metrics(
            e.metrics
        )
        rows.append((e.name, task, format_size(e.size), verified, cached, metrics))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        )
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(rows[0][-1]))
    return "\n".join(lines)


def describe(entry: ZooEntry, cache_dir: str | Path | None = None, clip_info: bool = True) -> str:
    """The ``info`` text of an entry: fields, cache state, verification and CLIP source."""
    path = cached_path(entry, cache_dir)
    lines = [f"name:      {entry.name}"]
    if entry.description:
        lines.append(f"about:     {entry.description}")
    lines.append(f"config:    {entry.config or '(held in the checkpoint)'}")
    fmt = {"fcclip": "official FC-CLIP detectron2 checkpoint", "ovseg": "ovseg checkpoint"}
    lines.append(f"format:    {entry.format} ({fmt.get(entry.format, '')})")
    for key in ("contents", "task", "dataset", "license", "source"):
        value = getattr(entry, key)
        if value:
            lines.append(f"{key + ':':<10} {value}")
    for i, url in enumerate(entry.urls):
        lines.append(f"{'urls:' if i == 0 else '':<10} {i + 1}. {url}")
    lines.append(
        f"size:      {format_size(entry.size)}" + (f" ({entry.size} bytes)" if entry.size else "")
    )
    if entry.sha256:
        lines.append(f"sha256:    {entry.sha256} (verified: checked on every use)")
    else:
        recorded = read_sidecar(path)
        got = f"; the download recorded {recorded}" if recorded else ""
        lines.append(f"sha256:    not known - UNVERIFIED{got}")
    if all(u.startswith("hf://") for u in entry.urls):
        from ovseg.zoo.hub import hub_cache_dir

        where = hub_cache_dir() or "huggingface_hub's default"
        lines.append(f"cache:     the Hugging Face Hub cache ({where}); sha256 checked on use")
    elif path.is_file():
        state, actual = check_cached(entry, path, record=False)
        what = {
            "ok": "matches",
            "unverified": "no recorded hash; will re-download to verify",
        }.get(state, f"DOES NOT MATCH (sha256 {actual}); will re-download")
        lines.append(f"cache:     {path} ({format_size(path.stat().st_size)}, {what})")
    else:
        part = partial_path(path)
        resume = f"; {part.stat().st_size} bytes downloaded, will resume" if part.is_file() else ""
        lines.append(f"cache:     {path} (not downloaded{resume})")
    if entry.clip:
        if clip_info:
            from ovseg.zoo.clip_cache import clip_cache_info

            text = clip_cache_info(entry.clip["model"], entry.clip["pretrained"]).describe()
        else:
            text = f"{entry.clip['model']} / {entry.clip['pretrained']} via open_clip"
        lines.append(f"clip:      {text}")
    if entry.metrics:
        lines.append(f"metrics:   {format_metrics(entry.metrics)}")
    lines.append(f"zoo file:  {entry.zoo_file}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--zoo-file",
        action="append",
        default=None,
        metavar="F",
        help="extra zoo YAML file (repeatable; also $OVSEG_ZOO)",
    )
    common.add_argument("--cache-dir", default=None, help="default: $OVSEG_HOME/checkpoints")
    parser = argparse.ArgumentParser(
        prog="python -m ovseg.zoo",
        description="Named ovseg models: list them, describe one, download its weights.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{list,info,download,verify}"
    )
    p = sub.add_parser("list", parents=[common], help="table of all models")
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    p = sub.add_parser("info", parents=[common], help="everything about one model")
    p.add_argument("name")
    p.add_argument("--no-clip", action="store_true", help="skip resolving the CLIP cache (fast)")
    p = sub.add_parser("download", parents=[common], help="download (or check) a model's weights")
    p.add_argument("name")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser(
        "verify", parents=[common], help="re-hash cached weights against the zoo / recorded hash"
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every cached model")
    return parser


def verify(entries: Sequence[ZooEntry], cache_dir: str | None, named: bool) -> tuple[str, bool]:
    """One line per entry (ok / MISMATCH / UNVERIFIED / not cached) and whether all cached
    files are good. Nothing is deleted or downloaded; hashes are not recorded."""
    lines, good = [], True
    for entry in entries:
        if all(u.startswith("hf://") for u in entry.urls):
            if named:
                lines.append(f"{entry.name}: in the Hub cache; its sha256 is checked on every load")
            continue
        path = cached_path(entry, cache_dir)
        state, actual = check_cached(entry, path, record=False)
        if state == "missing":
            if named:
                lines.append(f"{entry.name}: not cached ({path})")
            continue
        if state == "ok":
            how = "zoo sha256" if entry.sha256 else "recorded sha256, unverified entry"
            lines.append(f"{entry.name}: ok ({how}) {path}")
        elif state == "unverified":
            good = False
            lines.append(
                f"{entry.name}: UNVERIFIED {path}: no sha256 in the zoo and no recorded hash; "
                "`download` fetches it again"
            )
        else:
            good = False
            expected = entry.sha256 or read_sidecar(path)
            lines.append(
                f"{entry.name}: MISMATCH {path}: sha256 {actual}, expected {expected}; "
                "`download` fetches it again"
            )
    if not lines:
        lines.append(f"no zoo weights cached in {cached_path(entries[0], cache_dir).parent}")
    return "\n".join(lines), good


def main(argv: list[str] | None = None) -> int:
    """Run the zoo CLI; returns the exit status (errors are one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            if args.markdown:
                print(markdown_table(args.zoo_file), end="")
            else:
                print(_table(list_entries(args.zoo_file), args.cache_dir))
                files = ", ".join(str(f) for f in zoo_files(args.zoo_file))
                print(f"\nzoo files: {files}")
        elif args.command == "info":
            entry = get_entry(args.name, args.zoo_file)
            print(describe(entry, args.cache_dir, clip_info=not args.no_clip))
        elif args.command == "download":
            entry = get_entry(args.name, args.zoo_file)
            path = download(entry, cache_dir=args.cache_dir, progress=not args.quiet)
            if not entry.verified:
                print(
                    f"warning: {entry.name} has no sha256 in the zoo; recorded "
                    f"{read_sidecar(path)} (unverified)",
                    file=sys.stderr,
                )
            if is_offline():
                print(f"({entry.name} found in the cache; OVSEG_OFFLINE=1)", file=sys.stderr)
            print(path)
        elif args.command == "verify":
            named = bool(args.names)
            entries = (
                [get_entry(n, args.zoo_file) for n in args.names]
                if named
                else list_entries(args.zoo_file)
            )
            text, good = verify(entries, args.cache_dir, named)
            print(text)
            return 0 if good else 1
    except KeyError as e:  # UnknownModelError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ZooFileError, DownloadError, LockTimeout) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def publish_main(argv: list[str] | None = None) -> int:
    """``tools/publish_model.py CKPT --name NAME [--out DIR] [--url-prefix URL]``."""
    parser = argparse.ArgumentParser(
        prog="tools/publish_model.py",
        description=(
            "Strip optimizer/scheduler/RNG state from an ovseg checkpoint, write "
            "NAME-<sha256[:8]>.pth atomically and print the zoo entry to paste."
        ),
        epilog=(
            "example:\n  python tools/publish_model.py work_dirs/run/last.pth --name my-fcclip "
            "--out release/ --url-prefix https://example.org/ovseg\n"
            "  then paste the printed entry into a zoo file; use it with --zoo-file or $OVSEG_ZOO"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", help="an ovseg checkpoint (training or model-only)")
    parser.add_argument("--name", required=True, help="model name, also the file name's stem")
    parser.add_argument("--out", default=None, help="output directory (default: the checkpoint's)")
    parser.add_argument("--url-prefix", default=None, help="where the file will be hosted")
    parser.add_argument(
        "--config", default=None, help="shipped config name, e.g. tests/fcclip_tiny.yaml (optional)"
    )
    parser.add_argument(
        "--clip-model", default=None, help="open_clip model (default: meta['clip'])"
    )
    parser.add_argument("--clip-pretrained", default=None, help="open_clip pretrained tag")
    hub = parser.add_argument_group("Hugging Face Hub")
    hub.add_argument(
        "--hub-folder",
        metavar="DIR",
        default=None,
        help="also write a Hub-ready folder: model.safetensors, config.yaml, README.md (card)",
    )
    hub.add_argument(
        "--metrics",
        metavar="FILE",
        default=None,
        help="benchmark numbers for the card and the entry: YAML/JSON {dataset: {metric: value}}",
    )
    hub.add_argument("--dataset", default=None, help="training data, for the model card")
    hub.add_argument(
        "--push",
        metavar="OWNER/REPO",
        default=None,
        help="upload --hub-folder to this Hub repository (needs HF_TOKEN or `hf auth login`)",
    )
    args = parser.parse_args(argv)
    from ovseg.zoo.publish import publish_model, push_to_hub, write_hub_folder

    if args.push and not args.hub_folder:
        parser.error("--push uploads the --hub-folder: give --hub-folder DIR too")
    clip = (
        {"model": args.clip_model, "pretrained": args.clip_pretrained} if args.clip_model else None
    )
    metrics: dict = {}
    if args.metrics:
        import yaml

        try:
            metrics = yaml.safe_load(Path(args.metrics).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            print(f"error: --metrics {args.metrics}: {e}", file=sys.stderr)
            return 2
        if not isinstance(metrics, dict):
            print(f"error: --metrics {args.metrics}: expected a mapping", file=sys.stderr)
            return 2
    if args.hub_folder:
        try:
            folder = write_hub_folder(
                args.checkpoint,
                args.hub_folder,
                name=args.name,
                clip=clip,
                dataset=args.dataset,
                metrics=metrics,
                repo_id=args.push,
            )
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(
            f"wrote Hub folder {folder.folder} (model.safetensors {format_size(folder.size)}, "
            f"sha256 {folder.sha256})",
            file=sys.stderr,
        )
        if args.push:
            try:
                url = push_to_hub(folder.folder, args.push)
            except Exception as e:  # one line: auth, network, permissions
                print(f"error: --push {args.push}: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
            print(f"pushed to {url}", file=sys.stderr)
        repo = args.push or "OWNER/REPO"
        print(
            f"zoo entry for the Hub copy: urls: [hf://{repo}@<commit>/model.safetensors], "
            f"sha256: {folder.sha256}, size: {folder.size}",
            file=sys.stderr,
        )
    try:
        result = publish_model(
            args.checkpoint,
            args.name,
            args.out,
            args.url_prefix,
            clip=clip,
            config=args.config,
            metrics=metrics,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.stripped:
        print(f"stripped: {', '.join(result.stripped)}", file=sys.stderr)
    print(
        f"wrote {result.path} ({format_size(result.size)}, sha256 {result.sha256})", file=sys.stderr
    )
    print(result.entry_yaml, end="")
    return 0
