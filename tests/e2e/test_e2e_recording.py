"""Recording through ``videocall serve`` (``set`` ``record``/``filename``), converted by
Janus's own ``janus-pp-rec``: the files are Janus's ``.mjr`` format, byte for byte.

Only against our server: Janus writes wherever ``filename`` points (we keep recordings in
one folder on purpose), so the same relative name lands in different places on each.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import av
import pytest

from mediarelay import mjr
from tests.e2e.conftest import RECORDINGS
from tests.e2e.e2e_support import Clients, connect_call, expect_plugin_error, expect_result

pytestmark = pytest.mark.timeout(90)

PP_REC = shutil.which("janus-pp-rec") or "/usr/bin/janus-pp-rec"
#: How long the caller records.
WINDOW = 3.0


def convert_with_janus(source: Path, target: Path) -> None:
    if not Path(PP_REC).exists():
        pytest.fail("janus-pp-rec is missing: apt-get install -y janus-tools", pytrace=False)
    done = subprocess.run([PP_REC, str(source), str(target)], capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "[ERR]" not in output and target.stat().st_size > 0, output


def decoded_video(path: Path) -> tuple[int, int, float]:
    """Frames decoded, packets the decoder refused, and the duration in seconds (first to
    last frame) of a converted video file."""
    times: list[float] = []
    refused = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            try:
                times += [frame.time for frame in packet.decode() if frame.time is not None]
            except av.error.InvalidDataError:
                refused += 1
    return len(times), refused, (max(times) - min(times)) if times else 0.0


async def test_caller_records_its_own_media_and_janus_converts_it(calls: Clients) -> None:
    if calls.server.is_janus:
        pytest.skip("Janus writes wherever filename points; this checks our recordings folder")
    folder = RECORDINGS[calls.server.url]
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob)
    base = f"e2e/{alice.name}"
    started = time.monotonic()
    await expect_result(alice, {"request": "set", "record": True, "filename": base}, {"event": "set"})
    await asyncio.sleep(WINDOW)
    await expect_result(alice, {"request": "set", "record": False}, {"event": "set"})
    window = time.monotonic() - started

    files = sorted(p.name for p in (folder / "e2e").iterdir() if p.name.startswith(alice.name))
    assert files == [f"{alice.name}-audio.mjr", f"{alice.name}-video.mjr"]  # alice's only; no data channel
    assert not any(bob.name in p.name for p in folder.rglob("*"))  # bob did not ask
    video = mjr.read((folder / f"{base}-video.mjr").read_bytes())
    assert video.info is not None and video.info.codec in ("vp8", "h264") and not video.truncated

    out = folder / "converted"
    out.mkdir(exist_ok=True)
    convert_with_janus(folder / f"{base}-audio.mjr", out / "alice.opus")
    suffix = ".webm" if video.info.codec == "vp8" else ".mp4"
    convert_with_janus(folder / f"{base}-video.mjr", out / f"alice{suffix}")
    frames, refused, duration = decoded_video(out / f"alice{suffix}")
    assert frames > 0 and refused == 0, (frames, refused)  # the file starts at a keyframe
    assert abs(duration - window) < 0.15 * window, (frames, duration, window)


async def test_hostile_filenames_are_refused_and_nothing_is_written(calls: Clients) -> None:
    if calls.server.is_janus:
        pytest.skip("Janus writes wherever filename points")
    folder = RECORDINGS[calls.server.url]
    before = sorted(folder.rglob("*")) if folder.exists() else []
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob, media=False)
    refusals = {
        "/tmp/escape": "filename should be relative to the recordings folder",
        "../escape": "filename should not contain '..', '.' or empty path components",
        "a/../../escape": "filename should not contain '..', '.' or empty path components",
        "bad\tname": "filename should not contain control characters or backslashes",  # NUL: 454 in strict JSON
        "x" * 201: "filename should be at most 200 characters",
    }
    for name, why in refusals.items():
        await expect_plugin_error(alice, {"request": "set", "record": True, "filename": name}, 474,
                                  f"Invalid value ({why})")
    after = sorted(folder.rglob("*")) if folder.exists() else []
    assert after == before
    assert not Path("/tmp/escape-audio.mjr").exists() and not (folder.parent / "escape-audio.mjr").exists()
