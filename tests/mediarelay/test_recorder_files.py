"""The recorder without a call (mediarelay/recorder.py): names, the folder, frames, flushes, faults.

Real files in a temporary folder, a real event loop and the real writer thread; packets are
made up. What a whole call writes, and what janus-pp-rec makes of it, is test_recorder.py's.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from pathlib import Path

import pytest

from mediarelay import mjr, recorder
from mediarelay.recorder import Recorder
from mediarelay.recording_files import RecordingRefused, default_base, prepare, reason_of, safe_name


def rtp(seq: int, pt: int = 96, payload: bytes = b"\x10" * 20) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 3000, 0x1234) + payload


class States:
    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str], str]] = []

    def __call__(self, state: str, files: list[str], reason: str) -> None:
        self.seen.append((state, files, reason))


def test_names_made_from_users_keep_to_safe_characters() -> None:
    assert safe_name("al/ice ..\x00é") == "al_ice_..__"
    assert safe_name("al/ice") == "al_ice"
    assert safe_name("") == "unknown"
    assert len(safe_name("x" * 500)) == 64
    assert default_base("bob", "a/b", 1700000000123456) == "videocall-bob-a_b-1700000000123456"
    assert default_base("bob-1", "al-ice", 1700000000123456) == "videocall-bob_1-al_ice-1700000000123456"


def test_an_os_error_reads_as_a_sentence() -> None:
    assert reason_of(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == "no space left on device"
    assert reason_of(OSError(errno.EFBIG, os.strerror(errno.EFBIG))) == "file too large"


@pytest.mark.parametrize("base", ["/abs", "../up", "a/../../up", "nul\x00", "x" * 201, "a//b", ""])
def test_a_bad_name_is_refused_before_anything_is_created(tmp_path: Path, base: str) -> None:
    with pytest.raises(RecordingRefused):
        prepare(str(tmp_path / "recordings"), base)
    assert list(tmp_path.iterdir()) == []


def test_parent_folders_are_created_inside_the_folder(tmp_path: Path) -> None:
    prepared = prepare(str(tmp_path / "recordings"), "a/b/name")
    assert prepared.folder == str(tmp_path / "recordings")
    assert (tmp_path / "recordings/a/b").is_dir()
    assert prepared.created == [str(tmp_path / "recordings"), str(tmp_path / "recordings/a"),
                                str(tmp_path / "recordings/a/b")]


def test_a_link_pointing_out_of_the_folder_is_refused_and_what_was_made_is_removed(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "out").symlink_to(tmp_path, target_is_directory=True)
    (folder / "in").symlink_to(folder / "real", target_is_directory=True)
    (folder / "real").mkdir()
    with pytest.raises(RecordingRefused, match="inside the recordings folder"):
        prepare(str(folder), "out/x/name")
    (folder / "real" / "up").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(RecordingRefused, match="inside the recordings folder"):
        prepare(str(folder), "real/up/name")
    assert sorted(p.name for p in folder.iterdir()) == ["in", "out", "real"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recordings"]
    prepare(str(folder), "in/name")  # a link that stays inside is fine


def test_the_folder_itself_may_be_a_link(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "recordings").symlink_to(tmp_path / "disk", target_is_directory=True)
    assert prepare(str(tmp_path / "recordings"), "a/name").folder == str(tmp_path / "disk")


async def test_frames_are_whole_after_each_flush_and_the_header_comes_with_the_first(tmp_path: Path) -> None:
    states = States()
    rec = Recorder("t", str(tmp_path), "call", states)
    await rec.start(["video", "data"])
    assert states.seen == [("started", ["call-video.mjr", "call-data.mjr"], "")]
    assert (tmp_path / "call-video.mjr").read_bytes() == mjr.MAGIC  # Janus: the magic at open
    video = rec.tracks["video"]
    video.codec_names = {96: "VP8", 97: "H264"}
    video.rtp(rtp(1), 10.0)
    video.rtp(rtp(2, pt=97), 10.01)  # another codec than the file's: skipped
    video.rtp(rtp(3), 10.25)
    rec.tracks["data"].message("hi", 10.5)
    rec.flush()
    await asyncio.sleep(0.1)
    read = mjr.read((tmp_path / "call-video.mjr").read_bytes())
    assert read.info is not None and (read.info.kind, read.info.codec) == ("video", "vp8")
    assert [(f.offset_ms, f.packet) for f in read.frames] == [(0, rtp(1)), (250, rtp(3))]
    assert not read.truncated and video.skipped == 1
    data = mjr.read((tmp_path / "call-data.mjr").read_bytes())
    assert data.info is not None and data.info.codec == "text" and data.frames[0].packet == b"hi"
    await rec.close()
    assert states.seen[-1] == ("stopped", ["call-video.mjr", "call-data.mjr"], "")
    await rec.close()  # idempotent
    assert len(states.seen) == 2


async def test_buffers_are_flushed_by_size_and_by_time_not_per_packet(tmp_path: Path) -> None:
    rec = Recorder("t", str(tmp_path), "call", States())
    await rec.start(["audio"])
    audio = rec.tracks["audio"]
    audio.codec_names = {111: "opus"}
    audio.rtp(rtp(1, 111), 1.0)
    assert (tmp_path / "call-audio.mjr").stat().st_size == len(mjr.MAGIC)  # nothing written yet
    await asyncio.sleep(recorder.FLUSH_INTERVAL + 0.1)
    assert len(mjr.read((tmp_path / "call-audio.mjr").read_bytes()).frames) == 1
    big = b"\x00" * 1200
    for seq in range(2, 2 + recorder.FLUSH_BYTES // 1200 + 1):
        audio.rtp(rtp(seq, 111, big), 1.0 + seq / 50)
    assert rec.pending < 1300  # the 64 KiB flush went out at once
    await rec.close()
    assert len(mjr.read((tmp_path / "call-audio.mjr").read_bytes()).frames) == recorder.FLUSH_BYTES // 1200 + 2


async def test_an_open_that_fails_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir()
    (folder / "x-video.mjr").symlink_to(tmp_path / "target")  # O_NOFOLLOW refuses it
    states = States()
    with pytest.raises(RecordingRefused, match="could not be opened: too many levels of symbolic links"):
        await Recorder("t", str(folder), "x", states).start(["audio", "video"])
    assert sorted(p.name for p in folder.iterdir()) == ["x-video.mjr"]
    assert not (tmp_path / "target").exists() and states.seen == []


async def test_a_write_error_ends_the_recording_with_its_reason(tmp_path: Path) -> None:
    states = States()
    rec = Recorder("t", str(tmp_path), "call", states)
    await rec.start(["audio"])
    audio = rec.tracks["audio"]
    audio.codec_names = {111: "opus"}
    assert audio.fd is not None
    os.close(audio.fd)
    audio.fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    audio.rtp(rtp(1, 111), 1.0)
    rec.flush()
    for _ in range(50):
        if rec.state == "failed":
            break
        await asyncio.sleep(0.02)
    assert states.seen[-1] == ("failed", ["call-audio.mjr"], "no space left on device")
    assert audio.fd is None
    await rec.close()  # after a failure: nothing more, no second report
    assert [s for s, _, _ in states.seen] == ["started", "failed"]
