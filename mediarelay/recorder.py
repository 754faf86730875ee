"""Recording what one user sends in a call: Janus's ``.mjr`` files, written off the packet path.

A ``Recorder`` is one user's recording (Janus's VideoCall ``set`` ``record``: this user's
contribution, not the whole call): one ``Track`` per medium, ``<base>-audio.mjr``,
``-video.mjr``, ``-data.mjr``, inside the recordings folder. What it writes is ``mjr.py``'s.

- **Packets in.** The fast path hands a track each RTP packet in plaintext, after SRTP and
  before the rewrite for the other leg (``RecvStream.record``), with its arrival time on the
  loop's monotonic clock; the data channel relay hands it each message this user sends. A
  track only appends a frame to its buffer: no system call per packet.
- **Bytes out.** Buffers are flushed every ``FLUSH_INTERVAL`` or once ``FLUSH_BYTES`` wait, by a
  job on ``EXECUTOR``, one thread per worker process: a slow disk never stalls the event
  loop, and jobs run in the order they were submitted (open, flushes, close). A flush writes
  whole frames, so a file is valid up to its last whole frame after every flush; a worker
  that dies loses at most the batch not yet flushed.
- **Faults.** A write that fails (full disk, file size limit, I/O error, a file removed with
  its folder) ends the recording: what can be closed is closed, one warning is logged, and
  ``on_state("failed", ...)`` says why in a sentence. The call and its media are not touched.

Names and the folder: ``recording_files.py`` (checked, created inside the recordings folder,
or refused with nothing left behind).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mediarelay import mjr, rtp_header
from mediarelay.recording_files import RecordingRefused, prepare, reason_of, remove_dirs

log = logging.getLogger(__name__)

#: Seconds between flushes of a recording's buffers, and bytes that trigger one at once.
FLUSH_INTERVAL = 0.15
FLUSH_BYTES = 64 * 1024
#: The one thread of a worker process that touches recording files (see the module docstring).
EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
_FRAME_HEAD = struct.Struct("!4sIH")
_DATA_STAMP = struct.Struct("!Q")

#: ``on_state(state, files, reason)``: "started" (files: relative paths), "stopped", "failed".
OnState = Callable[[str, list[str], str], None]


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# --- a recording --------------------------------------------------------------------------------------


class Track:
    """One ``.mjr`` file of a recording: its buffer of whole frames, the fd once it is open."""

    __slots__ = ("kind", "name", "path", "fd", "codec", "payload_type", "created_us", "first", "buffer",
                 "frames", "skipped", "recorder", "asked_keyframe", "codec_names")

    def __init__(self, recorder: Recorder, kind: mjr.Kind, name: str, path: str) -> None:
        self.recorder = recorder
        self.kind: mjr.Kind = kind
        #: Relative to the recordings folder (what the user is told), and absolute.
        self.name = name
        self.path = path
        self.fd: int | None = None
        self.codec = "text" if kind == "data" else ""
        self.payload_type: int | None = None
        self.created_us = time.time_ns() // 1000
        self.first: float | None = None
        self.buffer = bytearray()
        self.frames = 0
        #: Packets of another payload type than the first (the file's codec is the first's).
        self.skipped = 0
        self.asked_keyframe = False
        #: The payload types of the stream it records and their codec names (``RecvStream``'s).
        self.codec_names: dict[int, str] = {}

    def rtp(self, plain: bytes, now: float) -> None:
        """A packet from the fast path (``now``: the loop's clock), as a frame in the buffer."""
        pt = plain[1] & 0x7F
        first = self.first
        if first is None:
            name = self.codec_names.get(pt)
            if name is None:
                self.skipped += 1
                return
            if self.kind == "video" and not _starts_keyframe(name, plain):
                # Better than Janus, which writes from any frame: the file begins decodable
                # (the sender was asked for a keyframe when recording started).
                self.skipped += 1
                return
            self.payload_type, self.codec = pt, name.lower()
            first = self._start(now)
        elif pt != self.payload_type:
            self.skipped += 1
            return
        if len(plain) > mjr.MAX_FRAME:
            self.skipped += 1
            return
        self.buffer += _FRAME_HEAD.pack(b"MEET", int((now - first) * 1000) & 0xFFFFFFFF, len(plain))
        self.buffer += plain
        self.frames += 1
        self.recorder.added(12 + len(plain))

    def message(self, message: str | bytes, now: float) -> None:
        """A data channel message this user sent, with Janus's real-time stamp."""
        data = message.encode("utf-8") if isinstance(message, str) else message
        if not data or len(data) + _DATA_STAMP.size > mjr.MAX_FRAME:
            self.skipped += 1
            return
        first = self.first if self.first is not None else self._start(now)
        self.buffer += mjr.data_frame(int((now - first) * 1000), time.time_ns() // 1000, data)
        self.frames += 1
        self.recorder.added(18 + len(data))

    def _start(self, now: float) -> float:
        """The first frame: Janus writes the info header now, ``u`` = this real time."""
        self.first = now
        self.buffer += mjr.Info(self.kind, self.codec, self.created_us, time.time_ns() // 1000).encode()
        return now


class Recorder:
    """One user's recording in a call: its tracks, their flushes, how it ends."""

    def __init__(self, label: str, recordings_dir: str, base: str, on_state: OnState,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.label = label
        self.recordings_dir = recordings_dir
        self.base = base
        self.on_state = on_state
        self.tracks: dict[str, Track] = {}
        self.state = "opening"   # -> recording -> stopped | failed
        self.pending = 0
        self._loop = loop or asyncio.get_running_loop()
        self._folder: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Future[Any] | None = None
        self._jobs: set[asyncio.Future[OSError | None]] = set()

    @property
    def active(self) -> bool:
        return self.state in ("opening", "recording")

    def files(self) -> list[str]:
        return [track.name for track in self.tracks.values()]

    # --- opening ------------------------------------------------------------------------------

    async def start(self, kinds: list[mjr.Kind]) -> None:
        """Open a file per kind; RecordingRefused (and nothing left behind) if any cannot be."""
        prepared = await self._loop.run_in_executor(EXECUTOR, prepare, self.recordings_dir, self.base)
        self._folder = prepared.folder
        tracks = [self._track(kind) for kind in kinds]
        try:
            await self._loop.run_in_executor(EXECUTOR, _open_tracks, tracks)
        except OSError as exc:
            await self._loop.run_in_executor(EXECUTOR, _discard, tracks, prepared.created)
            raise RecordingRefused(f"the recording could not be opened: {reason_of(exc)}") from None
        if self.state != "opening":  # closed while opening: nothing was written yet
            await self._loop.run_in_executor(EXECUTOR, _close_quietly, tracks)
            return
        for track in tracks:
            self.tracks[track.kind] = track
        self.state = "recording"
        self._notify("started", "")

    def _track(self, kind: mjr.Kind) -> Track:
        name = f"{self.base}-{kind}.mjr"
        assert self._folder is not None
        return Track(self, kind, name, os.path.join(self._folder, name))

    def add(self, kind: mjr.Kind) -> Track | None:
        """A medium appears while recording (a renegotiation added it): its file opens now."""
        if self.state != "recording" or kind in self.tracks:
            return self.tracks.get(kind)
        track = self.tracks[kind] = self._track(kind)
        self._submit(_open_tracks, [track])
        self._notify("started", "")
        return track

    def remove(self, kind: str) -> None:
        """A medium went away (its m-line was removed): flush and close its file."""
        track = self.tracks.pop(kind, None)
        if track is not None:
            data, track.buffer = bytes(track.buffer), bytearray()
            self.pending -= len(data)
            self._submit(_flush, [(track, data)], True)

    # --- writing ------------------------------------------------------------------------------

    def added(self, size: int) -> None:
        """A track buffered ``size`` bytes: flush now if enough wait, else soon."""
        self.pending += size
        if self.pending >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Hand every buffer to the writer thread (whole frames only)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.pending or self.state != "recording":
            return
        batch = [(track, bytes(track.buffer)) for track in self.tracks.values() if track.buffer]
        for track in self.tracks.values():
            track.buffer = bytearray()
        self.pending = 0
        self._submit(_flush, batch, False)

    def _submit(self, job: Callable[..., None], *args: object) -> None:
        future = self._loop.run_in_executor(EXECUTOR, _guard, job, *args)
        self._jobs.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[OSError | None]) -> None:
        self._jobs.discard(future)
        error = future.result() if not future.cancelled() else None
        if error is not None and self.state == "recording":
            self.fail(error)

    # --- ending -------------------------------------------------------------------------------

    def fail(self, error: OSError) -> None:
        """A write failed: stop taking packets, close what can be closed, say why; the call goes on."""
        self.state = "failed"
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reason = reason_of(error)
        log.warning("recording %s failed: %s (%s)", self.label, reason, ", ".join(self.files()))
        self._closing = self._loop.run_in_executor(EXECUTOR, _close_quietly, list(self.tracks.values()))
        self._notify("failed", reason)

    async def close(self) -> None:
        """Flush and close every file (``record: false``, hangup, a lost leg, shutdown); idempotent."""
        if self._closing is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch = [(track, bytes(track.buffer)) for track in self.tracks.values()]
            for track in self.tracks.values():
                track.buffer = bytearray()
            self.pending = 0
            was = self.state
            self.state = "stopped"
            self._closing = self._loop.run_in_executor(EXECUTOR, _guard, _flush, batch, True)
            error = await asyncio.shield(self._closing)
            if error is not None and was == "recording":
                self.state = "failed"
                log.warning("recording %s failed while closing: %s", self.label, reason_of(error))
                self._notify("failed", reason_of(error))
            elif was == "recording":
                log.info("recording %s stopped (%s)", self.label, ", ".join(self._names(batch)))
                self._notify("stopped", "")
            return
        await asyncio.shield(self._closing)

    @staticmethod
    def _names(batch: list[tuple[Track, bytes]]) -> list[str]:
        return [f"{track.name}: {track.frames} frames" for track, _ in batch]

    def _notify(self, state: str, reason: str) -> None:
        try:
            self.on_state(state, self.files(), reason)
        except Exception:
            log.exception("recording %s: reporting %s failed", self.label, state)


# --- jobs of the writer thread (EXECUTOR) ---------------------------------------------------------


def _starts_keyframe(codec: str, plain: bytes) -> bool:
    """Whether a decrypted RTP packet starts a keyframe of ``codec``."""
    try:
        header = rtp_header.header_length(plain)
        payload = plain[header:header + rtp_header.payload_length(plain, header)]
    except ValueError:
        return False
    return rtp_header.is_keyframe(codec, payload)


def _guard(job: Callable[..., None], *args: object) -> OSError | None:
    """Run a job; its OSError is returned to the loop, not raised into the executor's future."""
    try:
        job(*args)
    except OSError as exc:
        return exc
    return None


def _open_tracks(tracks: list[Track]) -> None:
    """Open (create, truncate, never through a symlink) and write the magic, as Janus does."""
    for track in tracks:
        fd = os.open(track.path, _OPEN_FLAGS, 0o644)
        track.fd = fd
        _write_all(fd, mjr.MAGIC)


def _discard(tracks: list[Track], created: list[str]) -> None:
    """Undo a start that failed: close and remove what was opened, and the folders made for it."""
    for track in tracks:
        if track.fd is not None:
            os.close(track.fd)
            track.fd = None
            try:
                os.unlink(track.path)
            except OSError:
                pass
    remove_dirs(created)


def _flush(batch: list[tuple[Track, bytes]], close: bool) -> None:
    """Append each buffer to its file; a file whose last link is gone (its folder was removed)
    counts as a failed write, as the data would go nowhere."""
    error: OSError | None = None
    for track, data in batch:
        fd = track.fd
        if fd is None:
            continue
        try:
            if data:
                _write_all(fd, data)
            if os.fstat(fd).st_nlink == 0:
                raise OSError(errno.ENOENT, "the recording file was removed")
        except OSError as exc:
            error = error or exc
        if close:
            track.fd = None
            try:
                os.close(fd)
            except OSError as exc:
                error = error or exc
    if error is not None:
        raise error


def _close_quietly(tracks: list[Track]) -> None:
    for track in tracks:
        if track.fd is not None:
            try:
                os.close(track.fd)
            except OSError:
                pass
            track.fd = None
