"""Real ``.mjr`` recordings for the converter's tests: media encoded with PyAV, packetized
into RTP (aiortc's VP8 and H.264 packetizers, a VP9 one here), written with ``mediarelay.mjr``
the way the relay's recorder writes them (magic, info header with the first packet, frames
with millisecond offsets from the first one).

The RTP numbers start just before their wrap (sequence 65 500, timestamp 2^32 - 30 000)
and every other packet carries a one-byte header extension, so both unwraps and the
header parser are exercised by every file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mediarelay import mjr

FPS = 30
SEQUENCE_START = 65_500
TIMESTAMP_START = (1 << 32) - 30_000


@dataclass(frozen=True)
class Encoded:
    """Encoded frames with their pts in the codec's RTP clock."""

    codec: str
    clock_rate: int
    frames: list[tuple[int, bytes]]

    @property
    def seconds(self) -> float:
        step = self.frames[1][0] - self.frames[0][0]
        return (self.frames[-1][0] - self.frames[0][0] + step) / self.clock_rate


def encode_video(codec: str, seconds: float, size: tuple[int, int] = (320, 240)) -> Encoded:
    """A moving picture, ``seconds`` long at 30 fps, one keyframe at the start (as WebRTC)."""
    width, height = size
    encoder = av.CodecContext.create({"vp8": "libvpx", "vp9": "libvpx-vp9", "h264": "libx264"}[codec], "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, FPS)
    encoder.framerate = Fraction(FPS)
    encoder.bit_rate = 600_000
    encoder.gop_size = 10 * FPS
    if codec == "h264":
        encoder.options = {"tune": "zerolatency", "preset": "ultrafast"}
        encoder.profile = "Baseline"
    elif codec == "vp9":
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames: list[tuple[int, bytes]] = []
    ys, xs = np.mgrid[0:height, 0:width]
    for index in range(round(seconds * FPS)):
        ramp = (xs + ys + index * 4) % 256
        image = np.stack([ramp, 255 - ramp, (ramp * 2) % 256], axis=-1).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        frames += [(p.pts * 3000, bytes(p)) for p in encoder.encode(frame)]
    frames += [(p.pts * 3000, bytes(p)) for p in encoder.encode(None)]
    return Encoded(codec, 90_000, frames)


def encode_opus(seconds: float) -> Encoded:
    """A 440 Hz tone in 20 ms Opus packets."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    encoder.bit_rate = 48_000
    frames: list[tuple[int, bytes]] = []
    for index in range(round(seconds * 50)):
        t = (np.arange(960) + index * 960) / 48_000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        chunk = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        chunk.sample_rate, chunk.pts = 48_000, index * 960
        frames += [(p.pts, bytes(p)) for p in encoder.encode(chunk)]
    frames += [(p.pts, bytes(p)) for p in encoder.encode(None)]
    return Encoded("opus", 48_000, [(pts - frames[0][0], data) for pts, data in frames])


def _vp9_packetize(frame: bytes, picture_id: int, keyframe: bool, size: int = 1100) -> list[bytes]:
    """draft-ietf-payload-vp9 non-flexible mode: I (15-bit picture id), P, B and E bits."""
    chunks = [frame[i:i + size] for i in range(0, len(frame), size)]
    out = []
    for index, chunk in enumerate(chunks):
        first = 0x80 | (0 if keyframe else 0x40) | (0x08 if index == 0 else 0) | (0x04 if index == len(chunks) - 1 else 0)
        out.append(bytes([first]) + struct.pack("!H", 0x8000 | picture_id) + chunk)
    return out


def payloads(codec: str, frame: bytes, picture_id: int) -> list[bytes]:
    """One encoded frame as its RTP payloads."""
    if codec == "opus":
        return [frame]
    if codec == "vp8":
        from aiortc.codecs.vpx import Vp8Encoder

        return Vp8Encoder._packetize(frame, picture_id)
    if codec == "h264":
        from aiortc.codecs.h264 import H264Encoder

        return H264Encoder._packetize(H264Encoder._split_bitstream(frame))
    keyframe = frame[0] & 0x04 == 0  # VP9 uncompressed header: frame_type 0 = key (profile 0)
    return _vp9_packetize(frame, picture_id, keyframe)


def rtp(sequence: int, timestamp: int, marker: bool, payload: bytes, ssrc: int, extension: bool) -> bytes:
    """An RTP packet, with a one-byte header extension (id 1, 3 bytes) when asked."""
    header = struct.pack("!BBHII", 0x90 if extension else 0x80, (0x80 if marker else 0) | 96,
                         sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    if extension:
        header += struct.pack("!HH", 0xBEDE, 1) + bytes([0x12, 1, 2, 3])
    return header + payload


def packets(encoded: Encoded, ssrc: int = 0x1234) -> list[tuple[float, bytes]]:
    """Every frame as RTP packets, each with the second it is sent (its pts)."""
    out: list[tuple[float, bytes]] = []
    sequence = SEQUENCE_START
    for picture_id, (pts, frame) in enumerate(encoded.frames):
        parts = payloads(encoded.codec, frame, picture_id & 0x7FFF)
        for index, payload in enumerate(parts):
            out.append((pts / encoded.clock_rate,
                        rtp(sequence, TIMESTAMP_START + pts, index == len(parts) - 1, payload, ssrc, sequence % 2 == 0)))
            sequence += 1
    return out


def write_mjr(path: Path, kind: mjr.Kind, codec: str, timed: Iterable[tuple[float, bytes]], first_us: int,
              created_us: int | None = None) -> Path:
    """A file as the relay writes one: magic, then the info header with the first frame."""
    timed = list(timed)
    start = timed[0][0]
    out = bytearray(mjr.MAGIC)
    out += mjr.Info(kind, codec, created_us if created_us is not None else first_us - 50_000, first_us).encode()
    for when, packet in timed:
        out += mjr.frame(round((when - start) * 1000), packet)
    path.write_bytes(bytes(out))
    return path


def write_data_mjr(path: Path, messages: Iterable[tuple[float, bytes]], first_us: int, created_us: int) -> Path:
    """A data recording: each message with its offset and the real-time stamp Janus prepends."""
    messages = list(messages)
    out = bytearray(mjr.MAGIC)
    out += mjr.Info("data", "text", created_us, first_us).encode()
    for when, text in messages:
        offset_ms = round((when - messages[0][0]) * 1000)
        out += mjr.data_frame(offset_ms, first_us + round((when - messages[0][0]) * 1e6), text)
    path.write_bytes(bytes(out))
    return path
