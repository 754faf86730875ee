"""The media senders replay: a short clip encoded once with PyAV and cached on disk.

A clip is the encoded frames of a synthetic picture (a moving gradient with a block of noise,
so the encoder really spends the bitrate asked for) or of a 440 Hz tone, with a keyframe
every second. It is made by FFmpeg's libvpx, libx264 or libopus through PyAV, exactly the
bitstream a real encoder sends, and stored as msgpack under ``~/.cache/videocall/clips/``
(``$XDG_CACHE_HOME`` or ``$VIDEOCALL_CACHE_DIR`` move it), keyed by codec, size, frame rate,
bitrate and length, so the next run with the same options starts at once.

Nothing here is sent anywhere; ``loadtest.media`` replays the frames in real time.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import msgpack

CLIP_SECONDS = 4
FPS = 30
AUDIO_BITRATE = 48_000
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Clip:
    codec: str  # "vp8" | "h264" | "opus"
    frames: list[bytes]
    keyframes: frozenset[int]  # indexes of keyframes (video)
    frame_seconds: float  # 1/fps, or 0.02 for Opus
    clock_rate: int
    width: int = 0
    height: int = 0

    @property
    def kind(self) -> str:
        return "audio" if self.codec == "opus" else "video"

    @property
    def bitrate(self) -> float:
        seconds = len(self.frames) * self.frame_seconds
        return sum(map(len, self.frames)) * 8 / seconds if seconds else 0.0


def cache_dir() -> Path:
    explicit = os.environ.get("VIDEOCALL_CACHE_DIR")
    if explicit:
        return Path(explicit) / "clips"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "videocall" / "clips"


def clip_path(codec: str, width: int, height: int, bitrate: int) -> Path:
    if codec == "opus":
        name = f"opus-{AUDIO_BITRATE}-{CLIP_SECONDS}s-v{FORMAT_VERSION}.msgpack"
    else:
        name = f"{codec}-{width}x{height}-{FPS}fps-{bitrate}-{CLIP_SECONDS}s-v{FORMAT_VERSION}.msgpack"
    return cache_dir() / name


def load_or_make(codec: str, width: int = 0, height: int = 0, bitrate: int = 0) -> Clip:
    """The cached clip for these options, encoded first if missing (a few seconds of CPU)."""
    path = clip_path(codec, width, height, bitrate)
    if path.exists():
        try:
            return _read(path)
        except (OSError, ValueError, KeyError, msgpack.UnpackException):
            pass  # a damaged cache file: encode again
    clip = _encode_audio() if codec == "opus" else _encode_video(codec, width, height, bitrate)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary name then renamed: load processes started together never see half a file.
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(msgpack.packb({
            "codec": clip.codec, "frames": clip.frames, "keyframes": sorted(clip.keyframes),
            "frame_seconds": clip.frame_seconds, "clock_rate": clip.clock_rate,
            "width": clip.width, "height": clip.height,
        }))
    os.replace(tmp.name, path)
    return clip


def _read(path: Path) -> Clip:
    data = msgpack.unpackb(path.read_bytes())
    if not data["frames"]:
        raise ValueError("empty clip")
    return Clip(codec=data["codec"], frames=list(data["frames"]), keyframes=frozenset(data["keyframes"]),
                frame_seconds=data["frame_seconds"], clock_rate=data["clock_rate"],
                width=data["width"], height=data["height"])


def _picture(index: int, width: int, height: int, noise: random.Random) -> tuple[bytes, bytes, bytes]:
    """YUV 4:2:0 planes: a diagonal gradient scrolling by ``index`` and a moving noise block."""
    ramp = bytes(range(256)) * ((width + height) // 256 + 3)
    y = bytearray(b"".join(ramp[(row + 3 * index) % 256:(row + 3 * index) % 256 + width] for row in range(height)))
    block_w, block_h = width // 4, height // 3
    x0 = (8 * index) % max(1, width - block_w)
    y0 = height // 3
    for row in range(y0, y0 + block_h):
        start = row * width + x0
        # Low-amplitude noise (6 bits): costly to code at low quantisers, cheap at high ones,
        # so the encoder's rate control can meet the bitrate asked for.
        y[start:start + block_w] = bytes(96 + (b & 0x3F) for b in noise.randbytes(block_w))
    cw, ch = width // 2, height // 2
    u = bytes([(index * 2) % 256]) * (cw * ch)
    v = bytes([128]) * (cw * ch)
    return bytes(y), u, v


def _encode_video(codec: str, width: int, height: int, bitrate: int) -> Clip:
    import av

    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"resolution {width}x{height}: width and height must be even and at least 16")
    if codec == "vp8":
        context = av.CodecContext.create("libvpx", "w")
        context.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "kf-min-dist": str(FPS), "kf-max-dist": str(FPS), "error-resilient": "1"}
    elif codec == "h264":
        context = av.CodecContext.create("libx264", "w")
        # Constrained baseline (what aiortc and browsers offer as 42e01f), no B-frames,
        # SPS/PPS repeated before each IDR so a receiver can start at any keyframe.
        context.profile = "Baseline"
        context.options = {"preset": "veryfast", "tune": "zerolatency",
                           "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:repeat-headers=1"}
    else:
        raise ValueError(f"unknown video codec {codec!r}")
    context.width, context.height, context.pix_fmt = width, height, "yuv420p"
    context.time_base = Fraction(1, FPS)
    context.framerate = Fraction(FPS, 1)
    context.bit_rate = bitrate
    context.gop_size = FPS
    noise = random.Random(1)
    frames: list[bytes] = []
    keys: set[int] = set()

    def take(packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.is_keyframe:
                keys.add(len(frames))
            frames.append(bytes(packet))

    for index in range(FPS * CLIP_SECONDS):
        frame = av.VideoFrame(width, height, "yuv420p")
        for number, (plane, data) in enumerate(zip(frame.planes, _picture(index, width, height, noise), strict=True)):
            _fill_plane(plane, data, width if number == 0 else width // 2)
        frame.pts = index
        if index % FPS == 0:
            frame.pict_type = av.video.frame.PictureType.I
        take(context.encode(frame))
    take(context.encode(None))
    if 0 not in keys:
        raise RuntimeError(f"{codec} encoder produced no leading keyframe")
    return Clip(codec=codec, frames=frames, keyframes=frozenset(keys), frame_seconds=1 / FPS,
                clock_rate=90_000, width=width, height=height)


def _fill_plane(plane: object, data: bytes, row_bytes: int) -> None:
    """Copy tightly packed rows into a plane whose rows may be padded (line_size >= width)."""
    line = plane.line_size  # type: ignore[attr-defined]
    if line == row_bytes:
        plane.update(data)  # type: ignore[attr-defined]
        return
    rows = len(data) // row_bytes
    padded = b"".join(data[r * row_bytes:(r + 1) * row_bytes].ljust(line, b"\0") for r in range(rows))
    plane.update(padded)  # type: ignore[attr-defined]


def _encode_audio() -> Clip:
    import math

    import av

    rate, samples_per_frame = 48_000, 960
    context = av.CodecContext.create("libopus", "w")
    context.sample_rate, context.format, context.layout = rate, "s16", "stereo"
    context.bit_rate = AUDIO_BITRATE
    context.time_base = Fraction(1, rate)
    frames: list[bytes] = []
    tone = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(rate)]
    for index in range(CLIP_SECONDS * rate // samples_per_frame):
        start = index * samples_per_frame % rate
        mono = tone[start:start + samples_per_frame]
        stereo = b"".join(s.to_bytes(2, "little", signed=True) * 2 for s in mono)
        frame = av.AudioFrame(format="s16", layout="stereo", samples=samples_per_frame)
        frame.planes[0].update(stereo)
        frame.sample_rate = rate
        frame.pts = index * samples_per_frame
        frames.extend(bytes(p) for p in context.encode(frame))
    frames.extend(bytes(p) for p in context.encode(None))
    return Clip(codec="opus", frames=frames, keyframes=frozenset(), frame_seconds=samples_per_frame / rate,
                clock_rate=48_000)
