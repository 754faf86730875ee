"""Recording a user's media through a worker (mediarelay/recorder.py) with real aiortc clients.

The caller sends encoded VP8 and Opus (aiortc's test pattern and tone) and data channel
messages; the recorded files must be what Janus writes: ``mjr.read`` parses them and Janus's
own post-processor, ``janus-pp-rec``, turns them into a ``.webm`` / ``.opus`` without an error,
with the frames and the duration of the recorded window. Names that would leave the folder
are refused with nothing written anywhere; a disk that fills ends the recording, not the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from mediarelay import mjr
from shared.ipc import IpcError
from shared.messages import LegRecord, LegRecording
from tests.support.janus_tools import needs_pp_rec, pp_rec
from tests.support.worker_calls import WorkerCall, running_worker

pytestmark = pytest.mark.usefixtures("relay_on_loopback")



class Client:
    """A client sending audio and VP8 video (and data, if asked), counting what it decodes."""

    def __init__(self, pc: RTCPeerConnection, data: bool = False) -> None:
        self.pc = pc
        self.received = {"audio": 0, "video": 0}
        self.tasks: list[asyncio.Task[None]] = []
        self.channel: RTCDataChannel | None = pc.createDataChannel("chat") if data else None
        pc.addTrack(AudioStreamTrack())
        sender = pc.addTrack(VideoStreamTrack())
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                         if c.mimeType in ("video/VP8", "video/rtx")])
        self._consumed: set[int] = set()
        pc.on("track", self._consume_soon)
        for transceiver in pc.getTransceivers():  # the callee's: their tracks came with the offer
            if transceiver.receiver.track is not None:
                self._consume_soon(transceiver.receiver.track)

    def _consume_soon(self, track: MediaStreamTrack) -> None:
        if id(track) not in self._consumed:
            self._consumed.add(id(track))
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(Exception):
            while True:
                await track.recv()
                self.received[track.kind] += 1

    async def receiving(self, kind: str, more: int = 5, timeout: float = 10.0) -> None:
        target = self.received[kind] + more
        async with asyncio.timeout(timeout):
            while self.received[kind] < target:
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


@contextlib.asynccontextmanager
async def recorded_call(folder: Path, caller_video: bool = True) -> AsyncIterator[tuple[WorkerCall, Client, Client]]:
    """A call through a worker recording into ``folder``; the caller has a data channel."""
    clients: dict[str, Client] = {}
    async with (running_worker(recordings_dir=str(folder)) as address,
                WorkerCall.start(address, lambda pc: clients.setdefault("caller", Client(pc, data=True)),
                                 lambda pc: clients.setdefault("callee", Client(pc))) as call):
        try:
            await call.connected()
            await clients["callee"].receiving("video")
            await clients["caller"].receiving("video")
            yield call, clients["caller"], clients["callee"]
        finally:
            for client in clients.values():
                client.stop()


async def record(call: WorkerCall, leg: str, on: bool, base: str | None = None, **extra: Any) -> None:
    await call.channel.request(LegRecord(call_id=call.call_id, leg=leg, record=on, base=base, **extra))


def recording_events(call: WorkerCall) -> list[LegRecording]:
    return [model for name, model in call.notes.seen if isinstance(model, LegRecording)]


async def wait_recording(call: WorkerCall, state: str, count: int = 1, timeout: float = 10.0) -> LegRecording:
    await call.notes.wait(lambda _: sum(e.state == state for e in recording_events(call)) >= count, timeout)
    return [e for e in recording_events(call) if e.state == state][count - 1]


def tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` (links not followed) and its size: what a test compares."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            found[str(path.relative_to(root))] = path.lstat().st_size if path.is_file() else -1
    return found


def janus_pp_rec(source: Path, target: Path) -> str:
    """Janus's post-processor on ``source``: its output, asserting success and no error line."""
    done = subprocess.run([pp_rec(), str(source), str(target)], check=False, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not [line for line in output.splitlines() if "ERR" in line], output
    assert target.stat().st_size > 0
    return output


def video_of(path: Path) -> tuple[int, float]:
    """Frames and duration (first to last frame, seconds) of a converted video, with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(packet.pts * packet.time_base) for packet in container.demux(stream)
                 if packet.size and packet.pts is not None]
    return len(times), max(times) - min(times)


# --- a recording ------------------------------------------------------------------------------------


@needs_pp_rec
async def test_a_recorded_call_is_what_janus_writes_and_janus_pp_rec_converts_it(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    async with recorded_call(folder) as (call, caller, _callee):
        await record(call, "caller", True, "alice/first")
        started = await wait_recording(call, "started")
        assert (started.leg, started.files) == ("caller", ["alice/first-audio.mjr", "alice/first-video.mjr",
                                                           "alice/first-data.mjr"])
        await record(call, "caller", True, "alice/other")  # already recording: nothing changes
        assert caller.channel is not None
        caller.channel.send("hello recorder")
        caller.channel.send(b"\x00binary\xff")
        window = asyncio.get_running_loop().time()
        await asyncio.sleep(3.0)
        await record(call, "caller", False)
        window = asyncio.get_running_loop().time() - window
        stopped = await wait_recording(call, "stopped")
        assert stopped.files == started.files
        assert len(recording_events(call)) == 2
        # Only the caller asked: only the caller's files, nothing of the callee's.
        assert set(tree(folder)) == {"alice", *started.files}

        recordings = {kind: mjr.read((folder / f"alice/first-{kind}.mjr").read_bytes())
                      for kind in ("audio", "video", "data")}
        assert {kind: (r.info.codec if r.info else None, r.truncated) for kind, r in recordings.items()} == {
            "audio": ("opus", False), "video": ("vp8", False), "data": ("text", False)}
        assert [f.packet for f in recordings["data"].frames] == [b"hello recorder", b"\x00binary\xff"]
        video = recordings["video"]
        assert video.info is not None and video.info.kind == "video" and video.info.fmtp is None
        ssrcs = {int.from_bytes(f.packet[8:12], "big") for f in video.frames}
        assert len(ssrcs) == 1  # the caller's media, never the relay's rewrite nor an RTX stream
        pictures = len({int.from_bytes(f.packet[4:8], "big") for f in video.frames})
        span = (video.frames[-1].offset_ms - video.frames[0].offset_ms) / 1000
        assert span == pytest.approx(window, abs=0.3)

        output = janus_pp_rec(folder / "alice/first-video.mjr", tmp_path / "first.webm")
        frames, duration = video_of(tmp_path / "first.webm")
        assert frames == pytest.approx(pictures, rel=0.03), output
        assert duration == pytest.approx(span, rel=0.05), output
        assert frames > 20  # aiortc's encoder on a busy machine: a few dozen frames in 3 s at least
        janus_pp_rec(folder / "alice/first-audio.mjr", tmp_path / "first.opus")
        with av.open(str(tmp_path / "first.opus")) as container:
            audio_packets = sum(1 for packet in container.demux(container.streams.audio[0]) if packet.size)
        assert audio_packets == pytest.approx(span / 0.02, rel=0.1)  # 20 ms Opus frames

        # Recording again, under another name: new files, the first ones as they were.
        before = tree(folder)
        await record(call, "caller", True, "alice/second")
        again = await wait_recording(call, "started", 2)
        assert again.files == ["alice/second-audio.mjr", "alice/second-video.mjr", "alice/second-data.mjr"]
        await asyncio.sleep(0.5)
        await record(call, "caller", False)
        await wait_recording(call, "stopped", 2)
        after = tree(folder)
        assert {name: size for name, size in after.items() if name in before} == before
        second = mjr.read((folder / "alice/second-video.mjr").read_bytes())
        assert second.info is not None and len(second.frames) > 10


async def test_without_a_name_the_file_says_who_with_whom_and_when(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    async with recorded_call(folder) as (call, _caller, _callee):
        await record(call, "callee", True, None, user="bob", peer="al/ice ../x")
        started = await wait_recording(call, "started")
        assert started.leg == "callee"
        base = started.files[0].removesuffix("-audio.mjr")
        assert re.fullmatch(r"videocall-bob-al_ice_\.\._x-\d{16}", base), base
        assert started.files == [f"{base}-audio.mjr", f"{base}-video.mjr", f"{base}-data.mjr"]  # the call has one
        await asyncio.sleep(0.3)
    # The hangup closed the files: whole frames only, and the callee's media, not the caller's.
    assert set(tree(folder)) == set(started.files)
    video = mjr.read((folder / started.files[1]).read_bytes())
    assert not video.truncated and len(video.frames) > 3


async def test_a_renegotiation_that_adds_video_while_recording_opens_the_video_file(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    async with (running_worker(recordings_dir=str(folder)) as address,
                WorkerCall.start(address, lambda pc: pc.addTrack(AudioStreamTrack()),
                                 lambda pc: pc.addTrack(AudioStreamTrack())) as call):
        await call.connected()
        await record(call, "caller", True, "late-video")
        assert (await wait_recording(call, "started")).files == ["late-video-audio.mjr"]
        call.caller.addTrack(VideoStreamTrack())
        await call.update("caller")
        with_video = await wait_recording(call, "started", 2, timeout=15)
        assert with_video.files == ["late-video-audio.mjr", "late-video-video.mjr"]
        late = folder / "late-video-video.mjr"
        async with asyncio.timeout(15):  # "started" comes as the file's open is queued: not there yet, or empty
            while len(mjr.read(data).frames if late.exists() and (data := late.read_bytes()) else []) < 10:
                await asyncio.sleep(0.2)
        await record(call, "caller", False)
        await wait_recording(call, "stopped")
    video = mjr.read((folder / "late-video-video.mjr").read_bytes())
    assert video.info is not None and video.info.codec == "vp8"


async def test_a_lost_leg_closes_the_recording_with_its_frames_whole(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    async with recorded_call(folder) as (call, _caller, _callee):
        await record(call, "caller", True, "lost")
        await wait_recording(call, "started")
        await asyncio.sleep(0.5)
        await call.callee.close()  # the callee's client goes away: its leg closes, the media unlinks
        stopped = await wait_recording(call, "stopped")
        assert stopped.leg == "caller"
        video = mjr.read((folder / "lost-video.mjr").read_bytes())
        assert not video.truncated and len(video.frames) > 5


# --- names and the folder -----------------------------------------------------------------------------


HOSTILE = ["/tmp/evil", "../evil", "a/../../evil", "nul\x00byte", "x" * 201, "a//b", "./a", "tab\there"]


async def test_every_hostile_name_is_refused_and_nothing_is_written_anywhere(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim-audio.mjr").write_bytes(b"precious")
    async with recorded_call(folder) as (call, _caller, _callee):
        await record(call, "caller", True, "warmup")  # the folder exists from now on
        await record(call, "caller", False)
        folder.joinpath("link").symlink_to(outside, target_is_directory=True)
        folder.joinpath("deep").mkdir()
        folder.joinpath("deep", "up").symlink_to(tmp_path, target_is_directory=True)
        folder.joinpath("victim-audio.mjr").symlink_to(outside / "victim-audio.mjr")
        before = tree(tmp_path)
        refused = {}
        for base in [*HOSTILE, "link/evil", "link/new/evil", "deep/up/outside/evil", "victim"]:
            # Past the signalling side's own check (the model's validator): the worker checks again.
            request = LegRecord.model_construct(call_id=call.call_id, leg="caller", record=True, base=base,
                                                user="", peer="")
            with pytest.raises(IpcError) as error:
                await call.channel.request(request)
            refused[base] = str(error.value)
        assert tree(tmp_path) == before, refused
        assert (outside / "victim-audio.mjr").read_bytes() == b"precious"
        assert "inside the recordings folder" in refused["link/evil"]
        assert "inside the recordings folder" in refused["deep/up/outside/evil"]
        assert "symbolic links" in refused["victim"]
        assert "relative" in refused["/tmp/evil"] and "'..'" in refused["../evil"]
        assert [e.state for e in recording_events(call)] == ["started", "stopped"]
        # The call goes on, and a good name still records.
        await record(call, "caller", True, "deep/fine")
        assert (await wait_recording(call, "started", 2)).files[0] == "deep/fine-audio.mjr"


# --- faults -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          check=False, capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"a small tmpfs cannot be mounted here ({done.stderr.strip() or 'mount failed'}): "
                    "the full-disk test needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill_up(path: Path, free: int) -> None:
    """Fill the disk of ``path`` up, then give ``free`` bytes back."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    size = path.stat().st_size
    os.truncate(path, max(0, size - free))


async def test_a_full_disk_ends_the_recording_with_a_reason_and_the_call_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "small"
    with small_disk(folder, "256k"):
        fill_up(folder / "filler", free=16 * 1024)  # the recording fills the rest within a second or two
        async with recorded_call(folder) as (call, caller, callee):
            await record(call, "caller", True, "filling")
            await wait_recording(call, "started")
            failed = await wait_recording(call, "failed", timeout=20)
            assert (failed.leg, failed.reason) == ("caller", "no space left on device")
            # The media is not disturbed: both clients keep receiving.
            await callee.receiving("video", 15)
            await caller.receiving("video", 15)
            assert {state for _, state, _ in call.notes.states()} == {"connected"}
            # What was written is whole frames up to where the disk filled.
            video = mjr.read((folder / "filling-video.mjr").read_bytes())
            assert video.info is not None and video.frames
            await record(call, "caller", False)  # nothing left to stop: fine


async def test_a_removed_folder_ends_the_recording_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    async with recorded_call(folder) as (call, _caller, callee):
        await record(call, "caller", True, "gone/soon")
        await wait_recording(call, "started")
        await asyncio.sleep(0.3)
        shutil.rmtree(folder / "gone")
        failed = await wait_recording(call, "failed")
        assert failed.reason == "the recording file was removed"
        await callee.receiving("video", 10)
