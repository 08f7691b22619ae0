"""A full data directory (issue 7), on a real 24 MiB tmpfs: an upload is refused with 507 ``storage_full``, a
job that cannot store its results fails with ``storage_full`` (status 11) and leaves no results file, the
job database says ``storage_full`` instead of crashing, the server keeps running, and once space is freed
the next job runs. Also: a results file is written under a temporary name and renamed, so a writer killed
mid-write leaves the previous complete file in place, never a truncated one that is served.

Mounting needs root on Linux (CI has both); elsewhere these tests skip and say why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import httpx
import pytest
from server import Server
from videos import make_video

from vidinfer.errors import StorageFull
from vidinfer.jobs.store import JobStore
from vidinfer.storage.local import LocalStore

MiB = 2**20


def _unmount(mnt: Path) -> None:
    for _ in range(50):  # a worker of the stopped server may hold a file for a moment
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a data directory that fills up in milliseconds."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("a disk-full test mounts a small tmpfs: it needs root on Linux")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield mnt
    finally:
        _unmount(mnt)


def fill(disk: Path, leave: int) -> Path:
    """A file that takes all of ``disk``'s free space but ``leave`` bytes."""
    filler = disk / f"filler-{time.monotonic_ns()}"
    size = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - leave
    with open(filler, "wb") as f:
        if size > 0:
            os.posix_fallocate(f.fileno(), 0, size)
    return filler


def fill_completely(disk: Path) -> Path:
    """A file written until the disk says ENOSPC, in big blocks and then in pages."""
    filler = disk / f"filler-{time.monotonic_ns()}"
    with open(filler, "wb", buffering=0) as f:
        for block in (b"\0" * 65536, b"\0" * 4096):
            try:
                while True:
                    f.write(block)
            except OSError:
                pass
    return filler


def stray_files(root: Path) -> list[str]:
    """Half-written objects: the temporary names of uploads and results."""
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".part", ".tmp")))


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """4 s at 30 fps: 20 samples at 5 fps, a job of about a second."""
    return make_video(tmp_path / "clip.mp4", frames=120, fps=Fraction(30), size=(160, 120))


def test_a_full_disk_refuses_uploads_fails_jobs_with_storage_full_and_recovers(
        small_disk: Path, tmp_path: Path, video: Path) -> None:
    server = Server(small_disk / "data", workers=1, env={"VIDINFER_MIN_FREE_MB": "4"})
    server.log = tmp_path / "server.log"  # not on the disk that fills
    with server:
        pid = server.proc.pid
        key = server.key()
        upload = server.upload(key, video)
        first = server.wait(key, server.submit(key, upload, infer_fps=5).json()["job_id"])
        assert first["status"] == 0, server.log.read_text()[-3000:]
        expected = httpx.get(first["output_signed_url"]).json()
        blobs = small_disk / "data" / "blobs"

        filler = fill(small_disk, leave=2 * MiB)  # under the 4 MiB reserve: no new object fits
        put_url = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": key},
                             json={"file_name": "more.mp4"}).json()["signed_url"]
        refused = httpx.put(put_url, content=video.read_bytes())
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "storage_full"
        assert "storage is full" in refused.json()["error"]["message"]
        assert "/disk/" not in refused.text  # no server path in the message

        response = server.submit(key, upload, infer_fps=5)  # the database still has its reserve
        assert response.status_code == 200, response.text
        job_id = response.json()["job_id"]
        failed = server.wait(key, job_id)
        assert (failed["status"], failed["state"], failed["error"]["code"]) == (11, "failed", "storage_full"), failed
        assert "free space" in failed["error"]["message"]
        assert failed.get("output_signed_url") is None
        assert not (blobs / "results" / "acme" / f"{job_id}.json").exists()

        filler.unlink()
        hard = fill_completely(small_disk)  # nothing left at all: soon the database cannot take a job either
        accepted = []
        for _ in range(300):  # SQLite's WAL may absorb a few rows before the disk refuses a write
            response = server.submit(key, upload, infer_fps=5)
            assert response.status_code in (200, 507), response.text
            if response.status_code == 507:
                break
            accepted.append(response.json()["job_id"])
        assert response.status_code == 507 and response.json()["error"]["code"] == "storage_full", response.text
        assert stray_files(blobs) == []  # nothing half-written left behind as if complete

        hard.unlink()
        for job_id in accepted:  # jobs taken while the disk was full still end: done, or storage_full
            assert server.wait(key, job_id)["status"] in (0, 11)
        upload_again = server.upload(key, video)  # space is back: uploads and jobs run again
        after = server.wait(key, server.submit(key, upload_again, infer_fps=5).json()["job_id"])
        assert after["status"] == 0, server.log.read_text()[-3000:]
        results = httpx.get(after["output_signed_url"]).json()
        assert results["frame_offset"] == expected["frame_offset"] and len(results["coco"]) == 20
        assert [e["predictions"] for e in results["coco"]] == [e["predictions"] for e in expected["coco"]]
        assert server.proc.poll() is None and server.proc.pid == pid  # the same server all along


def test_an_upload_that_meets_a_real_enospc_mid_stream_is_refused_and_removed(
        small_disk: Path, tmp_path: Path, video: Path) -> None:
    """No reserve and no Content-Length (a chunked upload): the disk itself refuses a write mid-stream."""
    server = Server(small_disk / "data", workers=0, env={"VIDINFER_MIN_FREE_MB": "0"})
    server.log = tmp_path / "server.log"
    with server:
        key = server.key()
        data = video.read_bytes()

        def put() -> httpx.Response:
            url = httpx.post(f"{server.url}/video_upload_signed_url", params={"api_key": key},
                             json={"file_name": "clip.mp4"}).json()["signed_url"]
            return httpx.put(url, content=iter([data[i: i + 4096] for i in range(0, len(data), 4096)]))

        filler = fill_completely(small_disk)
        refused = put()
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "storage_full"
        assert stray_files(small_disk / "data" / "blobs") == []
        filler.unlink()
        assert put().status_code == 200
        assert server.proc.poll() is None


def test_the_stores_turn_a_real_enospc_into_storage_full(small_disk: Path, tmp_path: Path) -> None:
    """With no reserve, the disk's own ENOSPC: the blob store and SQLite both raise ``StorageFull``."""
    store = LocalStore(small_disk / "blobs", b"secret", "http://127.0.0.1:1", min_free_bytes=0)
    store.put_bytes("results/acme/old.json", b'{"frame_offset": []}')
    jobs = JobStore(f"sqlite:///{small_disk / 'vidinfer.db'}")
    jobs.create_key("acme")
    source = tmp_path / "big.bin"
    source.write_bytes(b"\1" * (30 * MiB))
    with pytest.raises(StorageFull):
        store.put_file("uploads/acme/1/big.bin", source)  # larger than the disk
    filler = fill_completely(small_disk)
    with pytest.raises(StorageFull):
        store.put_bytes("results/acme/new.json", b"x" * 65536)
    with pytest.raises(StorageFull):  # the WAL absorbs a few rows; the disk refuses the next ones
        for i in range(5000):
            jobs.create("acme", input_url=f"http://example.com/{i}.mp4", infer_fps="1/1", models=[])
    assert stray_files(small_disk / "blobs") == []
    assert not store.exists("results/acme/new.json") and not store.exists("uploads/acme/1/big.bin")
    assert store.get_bytes("results/acme/old.json") == b'{"frame_offset": []}'
    jobs.close()
    filler.unlink()


WRITER = """
import sys
from pathlib import Path
from vidinfer.storage.local import LocalStore
big = b"[" + b"0," * (60 * 2**20) + b"0]"
LocalStore(Path(sys.argv[1]), b"secret", "http://127.0.0.1:1").put_bytes("results/acme/job.json", big)
"""


def test_a_writer_killed_mid_write_leaves_the_previous_results_file_whole(tmp_path: Path) -> None:
    """Results go to a temporary name, then ``os.replace``: a SIGKILL mid-write leaves the complete
    earlier file under the key (what a signed URL serves) and only a temporary file beside it."""
    root = tmp_path / "blobs"
    store = LocalStore(root, b"secret", "http://127.0.0.1:1")
    store.put_bytes("results/acme/job.json", b'{"frame_offset": [0]}')
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root)])
    folder = root / "results" / "acme"
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size > 0 for p in folder.glob(".job.json.*")):  # mid-write
        assert writer.poll() is None and time.monotonic() < deadline, "the writer ended before it was killed"
        time.sleep(0.001)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)
    assert store.get_bytes("results/acme/job.json") == b'{"frame_offset": [0]}'
    assert [p.name for p in folder.iterdir() if p.name != "job.json"][0].startswith(".job.json.")
