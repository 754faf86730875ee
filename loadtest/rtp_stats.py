"""What a receiver learns from RTP headers and payload descriptors alone, without decoding.

Pure: packets (parsed fields) and arrival times in, counters out. One :class:`StreamStats`
per received m-line counts packets and bytes, tracks the extended sequence number (RFC 3550
A.1) for loss, computes the interarrival jitter (RFC 3550 A.8), and checks that each payload
is well formed for its codec (VP8 payload descriptor and keyframe header, H.264 NAL unit
types, a non-empty Opus frame), so a relay that corrupts or truncates payloads shows up as
``malformed`` without a decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

#: Extended sequence numbers: a jump of more than this is a restart, not a loss.
MAX_DROPOUT = 3000


@dataclass
class StreamStats:
    kind: str  # "audio" | "video"
    codec: str  # "vp8" | "h264" | "opus"
    clock_rate: int
    packets: int = 0
    payload_bytes: int = 0
    rtx_packets: int = 0
    malformed: int = 0
    frames: int = 0  # video: marker bits; audio: packets
    keyframes: int = 0
    resolution: tuple[int, int] | None = None
    first_arrival: float | None = None
    last_arrival: float | None = None
    ssrc: int | None = None
    ssrc_changes: int = 0
    # RFC 3550 A.1: extended highest sequence and the first one seen (per SSRC epoch)
    base_seq: int | None = None
    max_seq: int = 0
    cycles: int = 0
    # RFC 3550 A.8, in clock-rate units scaled by 16 as the RFC's integer version
    _transit: float | None = None
    jitter: float = 0.0
    _epochs_expected: int = 0  # packets expected in earlier SSRC epochs

    def on_packet(self, *, seq: int, timestamp: int, ssrc: int, marker: bool, payload: bytes,
                  arrival: float) -> None:
        """Account for one (non-RTX) media packet that arrived at ``arrival`` seconds."""
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.last_arrival = arrival
        self.packets += 1
        self.payload_bytes += len(payload)
        if ssrc != self.ssrc:
            if self.ssrc is not None:
                self.ssrc_changes += 1
            self.ssrc = ssrc
            self._restart(seq)
        else:
            self._update_seq(seq)
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate * 10:  # a timestamp jump (new source) is not jitter
                self.jitter += (d - self.jitter) / 16
        self._transit = transit
        if self.kind == "audio" or marker:
            self.frames += 1
        if not self._check_payload(payload):
            self.malformed += 1

    def _restart(self, seq: int) -> None:
        # Loss already counted in the previous epoch stays counted (expected/received kept).
        if self.base_seq is not None:
            self._epochs_expected += self.max_ext - self.base_seq + 1
        self.base_seq = seq
        self.max_seq = seq
        self.cycles = 0
        self._transit = None

    def _update_seq(self, seq: int) -> None:
        delta = (seq - self.max_seq) & 0xFFFF
        if delta == 0:
            return  # duplicate
        if delta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        elif delta > 0xFFFF - 100:
            return  # late or reordered packet
        else:
            self._restart(seq)

    @property
    def max_ext(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        if self.base_seq is None:
            return 0
        return self._epochs_expected + self.max_ext - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Packets missing by sequence number (never negative: duplicates do not count back)."""
        return max(0, self.expected - self.packets)

    @property
    def jitter_ms(self) -> float:
        return self.jitter / self.clock_rate * 1000

    def _check_payload(self, payload: bytes) -> bool:
        if not payload:
            return False
        if self.codec == "vp8":
            return self._check_vp8(payload)
        if self.codec == "h264":
            return self._check_h264(payload)
        return True  # Opus: any non-empty frame (TOC byte) is acceptable

    def _check_vp8(self, payload: bytes) -> bool:
        # RFC 7741 payload descriptor
        size = 1
        first = payload[0]
        if first & 0x80:  # X: extension byte
            if len(payload) < 2:
                return False
            ext = payload[1]
            size = 2
            if ext & 0x80:  # I: picture id
                if len(payload) <= size:
                    return False
                size += 2 if payload[size] & 0x80 else 1
            if ext & 0x40:  # L: TL0PICIDX
                size += 1
            if ext & 0x30:  # T or K
                size += 1
        if len(payload) <= size:
            return False
        start = bool(first & 0x10) and (first & 0x07) == 0
        if start:
            frame = payload[size:]
            if not frame[0] & 0x01:  # P bit clear: keyframe; check the start code (RFC 6386 9.1)
                if len(frame) < 10 or frame[3:6] != b"\x9d\x01\x2a":
                    return False
                self.keyframes += 1
                width, height = struct.unpack("<HH", frame[6:10])
                self.resolution = (width & 0x3FFF, height & 0x3FFF)
        return True

    def _check_h264(self, payload: bytes) -> bool:
        # RFC 6184: forbidden bit clear, NAL type 1-23 (single), 24 (STAP-A) or 28 (FU-A)
        nal = payload[0]
        if nal & 0x80:
            return False
        kind = nal & 0x1F
        if kind == 28:
            if len(payload) < 2:
                return False
            if payload[1] & 0x80 and (payload[1] & 0x1F) == 5:
                self.keyframes += 1
            return True
        if kind == 24:
            return len(payload) > 3
        if kind == 5:
            self.keyframes += 1
        return 1 <= kind <= 23

    def summary(self) -> dict[str, Any]:
        duration = (self.last_arrival or 0) - (self.first_arrival or 0)
        return {
            "kind": self.kind, "codec": self.codec, "packets": self.packets, "bytes": self.payload_bytes,
            "lost_by_seq": self.lost, "rtx_packets": self.rtx_packets, "malformed": self.malformed,
            "frames": self.frames, "keyframes": self.keyframes,
            "resolution": list(self.resolution) if self.resolution else None,
            "jitter_ms": round(self.jitter_ms, 3),
            "bitrate_kbps": round(self.payload_bytes * 8 / duration / 1000, 1) if duration > 0 else 0.0,
            "ssrc_changes": self.ssrc_changes,
        }
