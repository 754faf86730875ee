"""Encoded frames into playable files with PyAV, never re-encoded; data messages as SubRip.

The containers ``janus-pp-rec`` picks: VP8 and VP9 in WebM, H.264 in MP4, Opus in Ogg
(``.opus``), and for a user's audio and video together WebM (VP8/VP9 + Opus) or MP4
(H.264 + Opus: FFmpeg's MP4 muxer takes Opus, with a ``dOps`` box). Packets keep their
RTP clock as time base (1/90000 video, 1/48000 Opus); the container rescales.

Opus needs its ``OpusHead`` in the container (Ogg's first page, WebM's CodecPrivate, MP4's
``dOps``): the one ``pp-opus.c`` writes, stereo, no pre-skip, 48 kHz. PyAV offers no way to
give a stream without a codec context that header, and an opened encoder would add its own
lookahead (312 samples of "initial padding") to every timestamp; so the Opus stream is
copied from a template: a one-packet Ogg file made in memory, read back (``_opus_template``).

``av`` is imported here only: ``videocall recordings list`` never loads it.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from videocall.depacketize import Track

#: Janus's pp-opus.c ``opus_extradata``: version 1, 2 channels, pre-skip 0, 48000 Hz, gain 0, family 0.
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, 48_000, 0, 0)
#: One 20 ms Opus packet of silence (CELT, fullband, one frame, empty).
OPUS_SILENCE = b"\xf8\xff\xfe"

#: The container each codec (or pair) goes in, and its file extension.
CONTAINERS: dict[str, tuple[str, str]] = {
    "vp8": ("webm", ".webm"), "vp9": ("webm", ".webm"), "h264": ("mp4", ".mp4"), "opus": ("ogg", ".opus"),
}


@dataclass(frozen=True)
class Placed:
    """A track and where it starts in the output, in its own clock units."""

    track: Track
    offset: int = 0


def container_for(tracks: Sequence[Track]) -> tuple[str, str]:
    """The format and extension for these tracks together (the video decides)."""
    video = [t.codec for t in tracks if t.codec != "opus"]
    return CONTAINERS[video[0] if video else tracks[0].codec]


def video_size(track: Track) -> tuple[int, int]:
    """Width and height of the first keyframe, decoded (only to read them; nothing is encoded)."""
    for frame in track.frames[:30]:
        decoder: Any = av.CodecContext.create(track.codec, "r")
        try:
            pictures = decoder.decode(av.Packet(frame.data)) + decoder.decode(None)
        except av.error.FFmpegError:
            continue
        for picture in pictures:
            return picture.width, picture.height
    return 640, 480  # no decodable keyframe: janus-pp-rec assumes the same


def _opus_template() -> Any:
    """An input Opus stream whose parameters are Janus's ``OpusHead`` and no initial padding."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48_000, layout="stereo")
        stream.codec_context.open()  # opened, never fed: so that PyAV keeps the header set below
        stream.codec_context.extradata = OPUS_HEAD
        packet = av.Packet(OPUS_SILENCE)
        packet.pts = packet.dts = 0
        packet.time_base = Fraction(1, 48_000)
        packet.stream = stream
        container.mux(packet)  # the Ogg demuxer needs a page after the two header pages
    buffer.seek(0)
    return av.open(buffer, "r", format="ogg").streams.audio[0]


def _add_stream(container: Any, track: Track) -> Any:
    if track.codec == "opus":
        stream = container.add_stream_from_template(_opus_template())
    else:
        width, height = video_size(track)
        stream = container.add_mux_stream(track.codec, width=width, height=height)
    stream.time_base = Fraction(1, track.clock_rate)
    return stream


def mux(path: Path, placed: Sequence[Placed], progress: Callable[[int], None] | None = None) -> None:
    """Write the tracks into one file at ``path``, each shifted by its offset, interleaved by time.

    ``progress`` is called with the number of frames written since its last call.
    """
    format_name, _ = container_for([p.track for p in placed])
    with av.open(str(path), "w", format=format_name) as container:
        streams = [_add_stream(container, p.track) for p in placed]
        queue: list[tuple[Fraction, int, int]] = []
        for number, item in enumerate(placed):
            if not item.track.frames:
                continue
            start = item.track.frames[0].pts
            for index, frame in enumerate(item.track.frames):
                queue.append((Fraction(frame.pts - start + item.offset, item.track.clock_rate), number, index))
        queue.sort()
        written = 0
        for _, number, index in queue:
            item = placed[number]
            frame = item.track.frames[index]
            packet = av.Packet(frame.data)
            packet.pts = packet.dts = frame.pts - item.track.frames[0].pts + item.offset
            packet.duration = frame.duration
            packet.time_base = Fraction(1, item.track.clock_rate)
            packet.is_keyframe = frame.keyframe
            packet.stream = streams[number]
            container.mux(packet)
            written += 1
            if progress is not None and written % 50 == 0:
                progress(50)
        if progress is not None:
            progress(written % 50)


# --- data channel messages -------------------------------------------------------------------


def srt_time(microseconds: int) -> str:
    """``HH:MM:SS,mmm``, as ``pp-srt.c``'s ``janus_pp_srt_format_time`` (which writes a dot)."""
    milliseconds = max(microseconds, 0) // 1000
    seconds, milliseconds = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d},{milliseconds:03d}"


def srt(messages: Sequence[tuple[int, bytes]]) -> bytes:
    """One cue per message, as ``pp-srt.c``: from the message's time (microseconds since the
    recording was created) to 1 ms before the next message, the last one for 5 seconds."""
    out = bytearray()
    for number, (when, text) in enumerate(messages, start=1):
        until = messages[number][0] - 1000 if number < len(messages) else when + 5_000_000
        out += f"{number}\n{srt_time(when)} --> {srt_time(until)}\n".encode()
        out += text + b"\n\n"
    return bytes(out)
