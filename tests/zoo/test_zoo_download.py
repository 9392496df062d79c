"""ovseg.zoo.download against a local HTTP server: verify, resume, retry, mirrors, offline, lock."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from zoo_server import payload, sha256

from ovseg import zoo
from ovseg.zoo.downloader import confirm_url, normalise_drive_url, read_sidecar

REPO = Path(__file__).resolve().parents[2]
FAST = {"backoff_s": 0.01, "timeout_s": 10.0, "progress": False}


def _entry(name: str, urls: list[str], data: bytes | None = None, **fields: object) -> zoo.ZooEntry:
    spec: dict = {"urls": urls}
    if data is not None:
        spec.update(sha256=sha256(data), size=len(data))
    spec.update(fields)
    return zoo.ZooEntry.from_dict(name, spec, zoo_file="<test>")


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix in (".partial", ".lock"))


def test_download_verifies_and_caches(server, make_zoo, isolated_env):
    data = payload(200_000)
    url = server.add("/w/tiny.pth", data)
    zoo_file = make_zoo({"tiny": {"url": url, "sha256": sha256(data), "size": len(data)}})

    path = zoo.download("tiny", zoo_file=zoo_file, progress=False)

    assert path == isolated_env / "checkpoints" / "tiny.pth"
    assert path.read_bytes() == data
    assert _leftovers(path.parent) == []
    assert not (path.parent / "tiny.pth.sha256").exists()  # verified entries need no sidecar
    assert len(server.hits("/w/tiny.pth")) == 1
    # second use: served from the cache, the server is not asked again
    assert zoo.download("tiny", zoo_file=zoo_file, progress=False) == path
    assert len(server.hits("/w/tiny.pth")) == 1


def test_unverified_entry_records_hash_and_redownloads_corrupted_cache(server, tmp_path):
    data = payload(50_000, seed=1)
    entry = _entry("nohash", [server.add("/nohash.pth", data)])
    assert not entry.verified

    path = zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert read_sidecar(path) == sha256(data)
    sidecar = (tmp_path / "nohash.pth.sha256").read_text()
    assert sidecar == f"{sha256(data)}  nohash.pth\n# size 50000\n"
    assert "UNVERIFIED" in zoo.describe(entry, tmp_path, clip_info=False)
    assert sha256(data) in zoo.describe(entry, tmp_path, clip_info=False)

    # bit rot since the download: the recorded hash no longer matches -> downloaded again
    raw = bytearray(data)
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert zoo.download(entry, cache_dir=tmp_path, **FAST).read_bytes() == data
    assert len(server.hits("/nohash.pth")) == 2


def test_unverified_cache_without_its_recorded_hash_is_not_trusted(
    server, tmp_path, make_zoo, capsys
):
    """Issue 18, case 10: a truncated file whose sidecar was removed used to have its own hash
    recorded as the truth. Now it is fetched again (online), refused offline, reported by
    `verify`; and a truncation under a sidecar is caught by the recorded size."""
    from ovseg.zoo.cli import main as zoo_main
    from ovseg.zoo.downloader import OfflineError

    data = payload(50_000, seed=4)
    entry = _entry("nohash2", [server.add("/nohash2.pth", data)])
    zoo_file = make_zoo({"nohash2": {"urls": entry.urls}})
    path = zoo.download(entry, cache_dir=tmp_path, **FAST)
    base = ["--zoo-file", str(zoo_file), "--cache-dir", str(tmp_path)]
    assert zoo_main(["verify", *base]) == 0
    assert "nohash2: ok (recorded sha256, unverified entry)" in capsys.readouterr().out

    path.write_bytes(data[:20_000])  # truncated: the recorded size catches it before hashing
    assert zoo_main(["verify", *base]) == 1
    assert "nohash2: MISMATCH" in capsys.readouterr().out
    (tmp_path / "nohash2.pth.sha256").unlink()  # ... and with its sidecar gone
    assert zoo_main(["verify", *base, "nohash2"]) == 1
    assert "nohash2: UNVERIFIED" in capsys.readouterr().out
    assert not (tmp_path / "nohash2.pth.sha256").exists()  # verify records nothing

    os.environ["OVSEG_OFFLINE"] = "1"
    try:
        with pytest.raises(OfflineError, match="cannot be verified"):
            zoo.download(entry, cache_dir=tmp_path, **FAST)
    finally:
        del os.environ["OVSEG_OFFLINE"]
    assert path.read_bytes() == data[:20_000]  # refused, not deleted
    assert zoo.download(entry, cache_dir=tmp_path, **FAST).read_bytes() == data
    assert len(server.hits("/nohash2.pth")) == 2


def test_cached_file_with_wrong_hash_is_downloaded_again(server, tmp_path):
    data = payload(40_000, seed=2)
    entry = _entry("m", [server.add("/m.pth", data)], data)
    stale = payload(40_000, seed=3)  # same size, other bytes (e.g. an older release)
    (tmp_path / "m.pth").write_bytes(stale)

    path = zoo.download(entry, cache_dir=tmp_path, **FAST)

    assert path.read_bytes() == data
    assert len(server.hits("/m.pth")) == 1


def test_resume_after_dropped_connection(server, tmp_path):
    data = payload(300_000, seed=4)
    url = server.add("/big.pth", data, drop_at=120_000, drop_times=1)

    path = zoo.download(_entry("big", [url], data), cache_dir=tmp_path, **FAST)

    assert path.read_bytes() == data
    hits = server.hits("/big.pth")
    assert [h.range for h in hits] == [None, "bytes=120000-"]
    assert [h.status for h in hits] == [200, 206]
    assert server.body_bytes("/big.pth") == len(data)  # nothing was fetched twice


def test_partial_file_survives_a_failed_run_and_is_resumed(server, tmp_path):
    data = payload(250_000, seed=5)
    url = server.add("/flaky.pth", data, drop_at=100_000, drop_times=100)
    entry = _entry("flaky", [url], data)

    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(entry, cache_dir=tmp_path, retries=1, **FAST)
    msg = str(err.value)
    assert url in msg and "100000 bytes are kept" in msg
    partial = tmp_path / "flaky.pth.partial"
    assert partial.stat().st_size == 100_000
    assert not (tmp_path / "flaky.pth").exists()

    server.routes["/flaky.pth"].drop_times = 0  # the network is back
    path = zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert path.read_bytes() == data
    assert server.hits("/flaky.pth")[-1].range == "bytes=100000-"
    assert not partial.exists()


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = payload(200_000, seed=6)
    url = server.add("/norange.pth", data, drop_at=80_000, drop_times=1, ignore_range=True)

    path = zoo.download(_entry("norange", [url], data), cache_dir=tmp_path, **FAST)

    assert path.read_bytes() == data
    hits = server.hits("/norange.pth")
    assert [h.range for h in hits] == [None, "bytes=80000-"]
    assert [h.status for h in hits] == [200, 200]  # range ignored: whole file again
    assert hits[-1].body_bytes == len(data)


def test_checksum_mismatch_deletes_partial_and_names_both_hashes(server, tmp_path):
    data = payload(60_000, seed=7)
    wrong = "0" * 64
    entry = _entry("bad", [server.add("/bad.pth", data)], sha256=wrong)

    with pytest.raises(zoo.ChecksumError) as err:
        zoo.download(entry, cache_dir=tmp_path, **FAST)

    assert wrong in str(err.value) and sha256(data) in str(err.value)
    assert err.value.expected == wrong and err.value.actual == sha256(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no partial, no final, no lock


def test_size_mismatch_fails_before_downloading(server, tmp_path):
    data = payload(30_000, seed=8)
    entry = _entry("sz", [server.add("/sz.pth", data)], size=12345)
    with pytest.raises(zoo.ChecksumError, match="serves 30000 bytes .* expects 12345"):
        zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert not (tmp_path / "sz.pth").exists()


def test_http_errors_name_url_and_status(server, tmp_path):
    url404 = server.url("/missing.pth")
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(_entry("gone", [url404]), cache_dir=tmp_path, **FAST)
    assert "HTTP 404" in str(err.value) and url404 in str(err.value)

    url500 = server.add("/broken.pth", b"x", error=500, error_times=100)
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(_entry("broken", [url500]), cache_dir=tmp_path, retries=2, **FAST)
    assert "HTTP 500" in str(err.value) and url500 in str(err.value)
    assert len(server.hits("/broken.pth")) == 3  # first try + 2 retries


def test_transient_5xx_is_retried(server, tmp_path):
    data = payload(20_000, seed=9)
    url = server.add("/busy.pth", data, error=503, error_times=2)
    path = zoo.download(_entry("busy", [url], data), cache_dir=tmp_path, **FAST)
    assert path.read_bytes() == data
    assert [h.status for h in server.hits("/busy.pth")] == [503, 503, 200]


def test_mirrors_are_tried_in_order(server, tmp_path):
    data = payload(20_000, seed=10)
    urls = [server.url("/dead/a.pth"), server.add("/mirror/a.pth", data)]
    path = zoo.download(_entry("a", urls, data), cache_dir=tmp_path, **FAST)
    assert path.read_bytes() == data
    assert [h.status for h in server.log] == [404, 200]


def test_all_mirrors_failing_lists_each(server, tmp_path):
    urls = [server.url("/x1.pth"), server.url("/x2.pth")]
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(_entry("x", urls), cache_dir=tmp_path, **FAST)
    assert "all 2 URLs failed" in str(err.value)
    assert urls[0] in str(err.value) and urls[1] in str(err.value)


def test_redirect_is_followed(server, tmp_path):
    data = payload(20_000, seed=11)
    target = server.add("/real.pth", data)
    url = server.add("/short", redirect=target)
    path = zoo.download(_entry("redir", [url], data), cache_dir=tmp_path, **FAST)
    assert path.read_bytes() == data
    assert [h.status for h in server.log] == [302, 200]


@pytest.mark.parametrize("kind", ["form", "cookie"])
def test_drive_confirmation_page_is_answered(server, tmp_path, kind):
    data = payload(70_000, seed=12)
    url = server.add("/uc", data, drive=kind) + "?export=download&id=FILEID"
    if kind == "form":
        server.add("/uc/download", data, drive=kind)
    path = zoo.download(_entry("drive", [url], data), cache_dir=tmp_path, **FAST)
    assert path.read_bytes() == data
    got = [h for h in server.log if h.status == 200]
    assert len(got) == 2  # the confirmation page, then the file
    assert "confirm=t0k3n" in got[1].path


def test_html_page_instead_of_file_is_an_error(server, tmp_path):
    url = server.add("/quota", b"", drive="html")
    with pytest.raises(zoo.DownloadError, match="HTML page instead of the file"):
        zoo.download(_entry("quota", [url]), cache_dir=tmp_path, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_confirm_url_parsing():
    import http.cookiejar

    jar = http.cookiejar.CookieJar()
    page = (
        '<form id="download-form" action="https://drive.usercontent.google.com/download" '
        'method="get"><input type="hidden" name="id" value="ID1">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u">'
        "</form>"
    )
    assert confirm_url(page, "https://drive.google.com/uc?id=ID1", jar) == (
        "https://drive.usercontent.google.com/download?id=ID1&confirm=t&uuid=u"
    )
    link = '<a href="/uc?export=download&amp;confirm=AbC&amp;id=ID2">Download anyway</a>'
    assert confirm_url(link, "https://drive.google.com/uc?id=ID2", jar) == (
        "https://drive.google.com/uc?export=download&confirm=AbC&id=ID2"
    )
    assert confirm_url("<html>nothing</html>", "https://x/y", jar) is None
    assert normalise_drive_url("https://drive.google.com/file/d/1tcB-8FN/view?usp=sharing") == (
        "https://drive.google.com/uc?export=download&id=1tcB-8FN"
    )


def test_no_network_names_url_and_offline_switch(tmp_path):
    import socket

    with socket.socket() as s:  # a port on which nobody listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(_entry("w", [url]), cache_dir=tmp_path, **FAST)
    assert url in str(err.value) and "OVSEG_OFFLINE=1" in str(err.value)


def test_offline_mode(server, tmp_path, monkeypatch):
    data = payload(30_000, seed=13)
    entry = _entry("off", [server.add("/off.pth", data)], data)
    monkeypatch.setenv("OVSEG_OFFLINE", "1")

    with pytest.raises(zoo.OfflineError) as err:
        zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert str(tmp_path / "off.pth") in str(err.value) and "OVSEG_OFFLINE" in str(err.value)
    assert server.log == []

    (tmp_path / "off.pth").write_bytes(data)  # e.g. copied from another machine
    assert zoo.download(entry, cache_dir=tmp_path, **FAST) == tmp_path / "off.pth"
    assert server.log == []

    (tmp_path / "off.pth").write_bytes(data[:-1] + b"\0")
    with pytest.raises(zoo.OfflineError, match="does not match|but .* is expected"):
        zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert server.log == []


def test_concurrent_threads_download_once(server, tmp_path):
    data = payload(400_000, seed=14)
    url = server.add("/shared.pth", data, delay_s=0.005)
    entry = _entry("shared", [url], data)
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(zoo.download(entry, cache_dir=tmp_path, **FAST))
        except BaseException as e:  # surfaced by the assertion below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [tmp_path / "shared.pth"] * 3
    assert (tmp_path / "shared.pth").read_bytes() == data
    assert len(server.hits("/shared.pth")) == 1
    assert _leftovers(tmp_path) == []


def test_concurrent_processes_download_once(server, make_zoo, tmp_path):
    data = payload(400_000, seed=15)
    url = server.add("/proc.pth", data, delay_s=0.01)
    zoo_file = make_zoo({"proc": {"url": url, "sha256": sha256(data), "size": len(data)}})
    code = (
        "import sys; from ovseg import zoo; "
        "print(zoo.download('proc', zoo_file=sys.argv[1], cache_dir=sys.argv[2], progress=False))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(zoo_file), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == [str(tmp_path / "proc.pth")] * 2
    assert (tmp_path / "proc.pth").read_bytes() == data
    assert len(server.hits("/proc.pth")) == 1
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to simulate ENOSPC")
def test_disk_full_keeps_partial_and_no_final_file(server, tmp_path):
    data = payload(50_000, seed=16)
    entry = _entry("full", [server.add("/full.pth", data)], data)
    # the partial file is a link to /dev/full: every write fails with ENOSPC like a full disk
    (tmp_path / "full.pth.partial").symlink_to("/dev/full")

    with pytest.raises(zoo.DiskFullError, match="no space left") as err:
        zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert "OVSEG_HOME" in str(err.value)
    assert not (tmp_path / "full.pth").exists()
    assert (tmp_path / "full.pth.partial").is_symlink()  # kept for the next run to resume


def test_cli_download_and_info(server, make_zoo, capsys, isolated_env):
    data = payload(10_000, seed=17)
    zoo_file = make_zoo({"cli-model": {"url": server.add("/c.pth", data)}})
    assert zoo.main(["download", "cli-model", "--zoo-file", str(zoo_file), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(isolated_env / "checkpoints" / "cli-model.pth")
    assert "unverified" in err and sha256(data) in err

    assert zoo.main(["info", "cli-model", "--zoo-file", str(zoo_file), "--no-clip"]) == 0
    out, _ = capsys.readouterr()
    assert "UNVERIFIED" in out and f"the download recorded {sha256(data)}" in out
    assert "matches" in out

    assert zoo.main(["download", "cli-modl", "--zoo-file", str(zoo_file)]) == 2
    _, err = capsys.readouterr()
    assert "did you mean 'cli-model'" in err


def test_killed_downloader_leaves_no_stale_lock_and_is_resumed(server, make_zoo, tmp_path):
    import signal
    import time

    data = payload(600_000, seed=18)
    url = server.add("/killed.pth", data, delay_s=0.05)
    zoo_file = make_zoo({"killed": {"url": url, "sha256": sha256(data), "size": len(data)}})
    code = "import sys; from ovseg import zoo; zoo.download('killed', sys.argv[1], sys.argv[2])"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(zoo_file), str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    partial = tmp_path / "killed.pth.partial"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size == 0):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: lock file and partial stay behind
    proc.wait(timeout=30)
    have = partial.stat().st_size
    assert 0 < have < len(data)
    server.routes["/killed.pth"].delay_s = 0.0

    path = zoo.download("killed", zoo_file=zoo_file, cache_dir=tmp_path, **FAST)

    assert path.read_bytes() == data
    last = server.hits("/killed.pth")[-1]
    assert last.range is not None and last.range.startswith("bytes=")
    assert int(last.range[6:-1]) == have  # resumed where the killed process stopped
    assert _leftovers(tmp_path) == []


def test_offline_switch_with_a_bad_value_is_refused_before_any_download(
    server, tmp_path, monkeypatch
):
    """OVSEG_OFFLINE=ture must not read as "online" (and download): it is an error naming it."""
    data = payload(1_000, seed=14)
    entry = _entry("typo", [server.add("/typo.pth", data)], data)
    monkeypatch.setenv("OVSEG_OFFLINE", "ture")
    with pytest.raises(ValueError, match=r"OVSEG_OFFLINE='ture' is not a switch"):
        zoo.download(entry, cache_dir=tmp_path, **FAST)
    assert server.log == [] and not (tmp_path / "typo.pth").exists()
