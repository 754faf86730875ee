"""Recording through ``videocall serve`` (``set`` ``record``/``filename``), converted by
Janus's own ``janus-pp-rec``: the files are Janus's ``.mjr`` format, byte for byte.

Only against our server: Janus writes wherever ``filename`` points (we keep recordings in
one folder on purpose), so the same relative name lands in different places on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import av
import pytest

from mediarelay import mjr
from tests.e2e.conftest import RECORDINGS, REPO, RUNNING, start_videocall
from tests.e2e.e2e_support import (
    MEDIA_TIMEOUT,
    Clients,
    Server,
    User,
    connect_call,
    expect_plugin_error,
    expect_result,
)
from tests.support.janus_tools import pp_rec
from tests.support.janus_ws import offer_host_address
from tests.support.servers import children, videocall_command

pytestmark = pytest.mark.timeout(90)

#: How long the caller records.
WINDOW = 3.0


def convert_with_janus(source: Path, target: Path) -> None:
    done = subprocess.run([pp_rec(), str(source), str(target)], capture_output=True, text=True, timeout=60, check=False)
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
    # The file covers the window: most of it (it starts at the keyframe asked for when
    # recording began, later on a loaded machine), and no more than it (plus the frames in
    # flight when it began).
    assert 0.5 * window <= duration <= window + 0.5, (frames, duration, window)


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


# --- record again, our converter and list, data, faults -------------------------------------

def recordings_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``videocall recordings ...`` as a user runs it (a subprocess of our command)."""
    return subprocess.run([*videocall_command(), "recordings", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)


def packet_count(path: Path, kind: str) -> int:
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return sum(1 for packet in container.demux(stream) if packet.size)


def first_times(path: Path) -> dict[str, tuple[int, float]]:
    """Per stream kind of a muxed file: frames decoded (every packet decodes) and the first one's time."""
    out: dict[str, tuple[int, float]] = {}
    with av.open(str(path)) as container:
        for stream in [*container.streams.audio, *container.streams.video]:
            times: list[float] = []
            for packet in container.demux(stream):
                times += [float(f.time) for f in packet.decode() if f.time is not None]
            out[stream.type] = (len(times), min(times) if times else -1.0)
            container.seek(0)
    return out


async def hang_up(caller: User, callee: User) -> None:
    await expect_result(caller, {"request": "hangup"},
                        {"event": "hangup", "username": caller.name, "reason": "Explicit hangup"})
    await callee.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT)
    for user in (caller, callee):
        await user.handle.notification("hangup", timeout=MEDIA_TIMEOUT)


async def record_for(user: User, seconds: float, filename: str | None = None) -> None:
    start: dict[str, object] = {"request": "set", "record": True}
    if filename is not None:
        start["filename"] = filename
    await expect_result(user, start, {"event": "set"})
    await asyncio.sleep(seconds)
    await expect_result(user, {"request": "set", "record": False}, {"event": "set"})


async def test_record_again_in_a_second_call_and_our_converter_matches_janus(calls: Clients, tmp_path: Path) -> None:
    """First call recorded under a name; hang up, call again, record under Janus's default
    name. Both recordings are whole; the second, through ``videocall recordings convert``,
    gives the frames janus-pp-rec gives and one file with audio and video in sync."""
    if calls.server.is_janus:
        pytest.skip("Janus writes wherever filename points; this checks our recordings folder")
    folder = RECORDINGS[calls.server.url]
    alice, bob = await calls.user("alice"), await calls.user("bob")
    first = f"e2e/again-{alice.name}"
    await connect_call(alice, bob)
    await record_for(alice, 1.0, first)
    await hang_up(alice, bob)
    for peer in calls.peers:
        await peer.close()

    before = {p.name: p.stat().st_size for p in (folder / "e2e").glob(f"again-{alice.name}-*")}
    await connect_call(alice, bob)
    await record_for(alice, 2.0)  # no filename: a new, default name (not the first call's)
    assert {p.name: p.stat().st_size for p in (folder / "e2e").glob(f"again-{alice.name}-*")} == before
    assert sorted(before) == [f"again-{alice.name}-audio.mjr", f"again-{alice.name}-video.mjr"]
    (video_path,) = [p for p in folder.glob("videocall-*-video.mjr") if alice.name.replace("-", "_") in p.name]
    base = video_path.name.removesuffix("-video.mjr")
    assert re.fullmatch(rf"videocall-{alice.name.replace('-', '_')}-{bob.name.replace('-', '_')}-\d{{16}}", base), base

    out = tmp_path / "janus"
    out.mkdir()
    for name in (f"e2e/again-{alice.name}", base):  # both recordings whole and convertible
        for kind, suffix in (("audio", ".opus"), ("video", ".webm")):
            recording = mjr.read((folder / f"{name}-{kind}.mjr").read_bytes())
            assert recording.info is not None and recording.frames and not recording.truncated, (name, kind)
            convert_with_janus(folder / f"{name}-{kind}.mjr", out / f"{Path(name).name}-{kind}{suffix}")

    ours = tmp_path / "ours"
    done = recordings_cli("convert", base, "--dir", str(folder), "--out", str(ours))
    assert done.returncode == 0, done.stdout + done.stderr
    janus_frames = decoded_video(out / f"{base}-video.webm")[0]
    our_frames, refused, _ = decoded_video(ours / f"{base}-video.webm")
    assert refused == 0 and abs(our_frames - janus_frames) <= 2, (our_frames, janus_frames)
    ours_audio = packet_count(ours / f"{base}-audio.opus", "audio")
    janus_audio = packet_count(out / f"{base}-audio.opus", "audio")
    assert abs(ours_audio - janus_audio) <= 2, (ours_audio, janus_audio)
    muxed = first_times(ours / f"{base}.webm")
    assert set(muxed) == {"audio", "video"}, muxed
    assert muxed["video"][0] >= our_frames - 2 and muxed["audio"][0] >= ours_audio - 2, muxed
    # In sync: each stream starts at its first frame's real time (the info headers' ``u``).
    # Video starts later, at the keyframe asked for when recording began (one round trip and
    # a frame: ~0.15 s here); audio from its first packet.
    heads = {kind: mjr.read((folder / f"{base}-{kind}.mjr").read_bytes()).info for kind in ("audio", "video")}
    assert heads["audio"] is not None and heads["video"] is not None
    lag = (heads["video"].first_frame_us - heads["audio"].first_frame_us) / 1e6
    assert abs((muxed["video"][1] - muxed["audio"][1]) - lag) < 0.025, (muxed, lag)
    assert -0.1 < lag < 2.0, lag  # video from within the 2 s recorded, never well before audio

    listed = recordings_cli("list", "--dir", str(folder))
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if line.startswith(f"{base}:")]
    duration = float(re.search(r" duration=([\d.]+)s ", line)[1])  # type: ignore[index]
    assert f"user={alice.name.replace('-', '_')} peer={bob.name.replace('-', '_')} " in line, line
    assert " media=audio:opus,video:vp8 " in line and 1.0 <= duration <= 2.5, line  # of the 2 s recorded


async def test_data_channel_messages_are_recorded_and_become_subtitles(calls: Clients, tmp_path: Path) -> None:
    if calls.server.is_janus:
        pytest.skip("Janus writes wherever filename points; this checks our recordings folder")
    folder = RECORDINGS[calls.server.url]
    alice, bob = await calls.user("alice"), await calls.user("bob")
    await connect_call(alice, bob, media=False, datachannel="chat")
    assert alice.peer is not None and bob.peer is not None
    await alice.peer.wait_channel_open()
    base = f"e2e/data-{alice.name}"
    await expect_result(alice, {"request": "set", "record": True, "filename": base}, {"event": "set"})
    sent = ["hello bob", "ça va? ✓", "third"]
    for text in sent:
        alice.peer.send_data(text)
        await asyncio.sleep(0.1)
    await bob.peer.wait_data(len(sent))
    bob.peer.send_data("bob is not recorded")
    await alice.peer.wait_data(1)
    await expect_result(alice, {"request": "set", "record": False}, {"event": "set"})

    data = mjr.read((folder / f"{base}-data.mjr").read_bytes())
    assert data.info is not None and data.info.kind == "data" and data.info.codec == "text"
    assert [f.packet.decode() for f in data.frames] == sent
    done = recordings_cli("convert", f"{base}-data.mjr", "--dir", str(folder), "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    cues = (tmp_path / f"data-{alice.name}-data.srt").read_text().split("\n\n")
    assert [cue.splitlines()[2] for cue in cues if cue.strip()] == sent


def relay_workers(serve_pid: int) -> list[int]:
    """The ``videocall relay`` processes the serve process started (its children)."""
    return children(serve_pid)


@pytest.mark.videocall
async def test_a_killed_worker_leaves_whole_frames_and_a_stopped_one_closes_its_files(tmp_path: Path) -> None:
    """SIGKILL the relay worker mid-recording: the files hold whole frames up to the last
    flush and janus-pp-rec converts them. Then, on the restarted worker, SIGTERM the serve
    process mid-recording (a drain of one second): the worker closes the files itself."""
    serve = contextlib.contextmanager(start_videocall)(
        tmp_path, "videocall-serve-recording", None, {"VIDEOCALL_DRAIN_TIMEOUT": "1", "VIDEOCALL_LOG_LEVEL": "INFO"})
    with serve as url, offer_host_address("127.0.0.1"):
        process = RUNNING[url]
        assert process.proc is not None
        folder = RECORDINGS[url]
        async with Clients(Server("videocall", url, "127.0.0.1", 60)) as calls:
            alice, bob = await calls.user("alice"), await calls.user("bob")
            await connect_call(alice, bob)
            await expect_result(alice, {"request": "set", "record": True, "filename": "killed"}, {"event": "set"})
            await asyncio.sleep(1.0)
            (worker,) = relay_workers(process.proc.pid)
            os.kill(worker, signal.SIGKILL)
            await bob.handle.plugin_event("hangup", timeout=MEDIA_TIMEOUT)
            for kind, suffix in (("audio", ".opus"), ("video", ".webm")):
                recording = mjr.read((folder / f"killed-{kind}.mjr").read_bytes())  # whole frames, parsed
                assert recording.info is not None and len(recording.frames) > 10, kind
                convert_with_janus(folder / f"killed-{kind}.mjr", tmp_path / f"killed-{kind}{suffix}")
            frames, refused, _ = decoded_video(tmp_path / "killed-video.webm")
            assert frames > 10 and refused == 0, (frames, refused)
            for peer in calls.peers:
                await peer.close()

            deadline = time.monotonic() + 20
            while True:  # the restarted worker takes the next call
                try:
                    await connect_call(alice, bob)
                    break
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
            await expect_result(alice, {"request": "set", "record": True, "filename": "stopped"}, {"event": "set"})
            await asyncio.sleep(1.0)
            process.proc.send_signal(signal.SIGTERM)  # the serve process only: it drains, then stops its worker
            await asyncio.get_running_loop().run_in_executor(None, process.proc.wait, 15)
        assert process.proc.returncode == 0, process.tail(process.stderr)
        log = process.stderr.read_text()
        assert "recording " in log and "/caller stopped (stopped-audio.mjr: " in log, process.tail(process.stderr)
        for kind in ("audio", "video"):
            recording = mjr.read((folder / f"stopped-{kind}.mjr").read_bytes())
            assert recording.info is not None and len(recording.frames) > 10 and not recording.truncated, kind
            # Written to the end: the last frame is from the drain's end, not a flush before it.
            assert recording.frames[-1].offset_ms > 1500, (kind, recording.frames[-1].offset_ms)
        convert_with_janus(folder / "stopped-video.mjr", tmp_path / "stopped-video.webm")
