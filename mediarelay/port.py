"""One leg's media socket(s), as the fast path sees them: where its client's SRTP comes in
(demultiplexed to a ``RecvStream`` by SSRC, by payload type for an SSRC the SDP did not give, by
rid for a rid simulcast m-line) and where the relay's RTCP to it goes out. The streams and what
they do with a packet are ``forwarder.py``'s; ``Link`` names one linked direction of an m-line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from struct import Struct
from typing import Any

from pylibsrtp import Error as SrtpError

from mediarelay.forwarder import Counters, RecvStream, SendStream
from mediarelay.rtp_header import parse_extensions
from mediarelay.simulcast import LayerSource

log = logging.getLogger(__name__)

_SSRC = Struct("!I")


class RidDemux:
    """Rid simulcast: which substream's ``RecvStream`` a packet of a not yet known SSRC belongs
    to, by its ``rtp-stream-id`` (RTX: ``repaired-rtp-stream-id``) header extension, which
    browsers send on a new SSRC's first packets. Janus learns its ``ssrc[]`` the same way."""

    __slots__ = ("streams", "rid_extension", "repaired_extension")

    def __init__(self, streams: dict[bytes, RecvStream], rid_extension: int | None,
                 repaired_extension: int | None) -> None:
        self.streams = streams
        self.rid_extension = rid_extension
        self.repaired_extension = repaired_extension

    def stream_of(self, plain: bytes, rtx: bool) -> RecvStream | None:
        wanted = (self.repaired_extension, self.rid_extension) if rtx else (self.rid_extension,)
        try:
            elements = dict(parse_extensions(plain))
        except ValueError:
            return None
        for x_id in wanted:
            value = elements.get(x_id) if x_id is not None else None
            if value is not None:
                return self.streams.get(value.rstrip(b"\x00"))
        return None


@dataclass(frozen=True)
class Link:
    """A linked direction of one m-line: packets from the ``source`` leg's client arrive at
    ``recv_stream`` (on the source leg's ``Port``) and leave by ``send_stream`` to the ``sink``
    leg's client."""

    source: str
    sink: str
    recv_stream: RecvStream
    send_stream: SendStream


class Port:
    """One leg's media socket(s): where its clients' SRTP comes in and the relay's goes out."""

    def __init__(self, name: str, counters: Counters, clock: Callable[[], float],
                 on_rtcp: Callable[[Port, bytes, float], None]) -> None:
        self.name = name
        self.counters = counters
        self.clock = clock
        self.on_rtcp = on_rtcp
        self.streams: list[RecvStream] = []
        #: SSRC (4 bytes, as on the wire) -> stream, for media and for RTX.
        self.media: dict[bytes, RecvStream] = {}
        self.rtx: dict[bytes, RecvStream] = {}
        #: Payload type -> (stream, is RTX): finds the stream of an SSRC not announced in SDP.
        self.payload_types: dict[int, tuple[RecvStream, bool]] = {}
        #: Payload type -> (rid demultiplexer, is RTX): the same for a rid simulcast m-line.
        self.rid_layers: dict[int, tuple[RidDemux, bool]] = {}
        self.tapped: set[int] = set()
        self.srtp_rx: Any = None
        self.srtp_tx: Any = None
        #: The nominated pair's ``sendto`` and the client's address (None: not connected); RTP goes
        #: by ``send_media`` when given (protects and sends a plain packet, held to the end of the
        #: loop iteration: ``outbox``), else by ``srtp_tx.protect`` and ``sendto``.
        self.sendto: Callable[[bytes, Any], None] | None = None
        self.send_media: Callable[[bytes | bytearray], None] | None = None
        self.remote: Any = None
        self._logged_error = False

    # --- setup ------------------------------------------------------------------------------------

    def connect(self, srtp_rx: Any, srtp_tx: Any, sendto: Callable[[bytes, Any], None], remote: Any,
                send_media: Callable[[bytes | bytearray], None] | None = None) -> None:
        """The leg's SRTP sessions and nominated pair (again after an ICE restart). RTCP is sent
        by ``sendto`` at once (a BYE just before the socket closes), RTP by ``send_media``."""
        self.srtp_rx, self.srtp_tx, self.sendto, self.remote = srtp_rx, srtp_tx, sendto, remote
        self.send_media = send_media

    def disconnect(self) -> None:
        self.sendto = self.send_media = None

    def feed(self, send_stream: SendStream) -> None:
        """``send_stream`` sends to this leg's client."""
        if self.send_media is not None:
            send_stream.attach(self.send_media)
        elif self.sendto is not None:
            send_stream.connect(self.srtp_tx.protect, self.sendto, self.remote)

    def add(self, stream: RecvStream, ssrcs: tuple[int, ...], rtx_ssrcs: dict[int, int],
            payload_types: list[int], rtx_payload_types: list[int]) -> None:
        """Receive ``stream`` here: by the SSRCs the client announced, else by payload type."""
        self.streams.append(stream)
        announced = ssrcs[:1]
        for ssrc in announced:
            if ssrc != stream.ssrc:
                stream.new_source(ssrc)
        if stream.ssrc is not None:  # announced, or learnt before a re-link
            self.media[_SSRC.pack(stream.ssrc)] = stream
        for rtx_ssrc, media_ssrc in rtx_ssrcs.items():
            if media_ssrc in announced:
                stream.rtx_ssrc = rtx_ssrc
        if stream.rtx_ssrc is not None:
            self.rtx[_SSRC.pack(stream.rtx_ssrc)] = stream
        for pt in payload_types:
            self.payload_types.setdefault(pt, (stream, False))
        for pt in rtx_payload_types:
            self.payload_types.setdefault(pt, (stream, True))

    def add_layers(self, streams: list[RecvStream], layers: tuple[LayerSource, ...], payload_types: list[int],
                   rtx_payload_types: list[int], rid_extension: int | None = None,
                   repaired_extension: int | None = None) -> None:
        """Receive a simulcast m-line here: a stream per substream, by the SSRCs the SDP gave
        (SSRC simulcast) or learnt, else (rid simulcast) by the rid extension of a new SSRC."""
        for stream, layer in zip(streams, layers, strict=True):
            self.streams.append(stream)
            if layer.ssrc is not None and layer.ssrc != stream.ssrc:
                stream.new_source(layer.ssrc)
            if stream.ssrc is not None:
                self.media[_SSRC.pack(stream.ssrc)] = stream
            if layer.rtx_ssrc is not None:
                stream.rtx_ssrc = layer.rtx_ssrc
            if stream.rtx_ssrc is not None:
                self.rtx[_SSRC.pack(stream.rtx_ssrc)] = stream
        if rid_extension is None:
            return
        demux = RidDemux({layer.rid.encode(): stream for stream, layer in zip(streams, layers, strict=True)
                          if layer.rid is not None}, rid_extension, repaired_extension)
        for pt in payload_types:
            self.rid_layers[pt] = (demux, False)
        for pt in rtx_payload_types:
            self.rid_layers[pt] = (demux, True)

    def clear(self) -> None:
        self.streams.clear()
        self.media.clear()
        self.rtx.clear()
        self.payload_types.clear()
        self.rid_layers.clear()

    # --- sending ----------------------------------------------------------------------------------

    def send_rtcp(self, packet: bytes) -> None:
        """Send relay-made RTCP (plain) to this leg's client."""
        if self.sendto is None or not packet:
            return
        try:
            self.sendto(self.srtp_tx.protect_rtcp(packet), self.remote)
        except (SrtpError, ValueError, TypeError, OSError):
            self.counters.send_failed += 1

    # --- receiving --------------------------------------------------------------------------------

    def handler(self, original: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        """The ``datagram_received`` for one of the leg's sockets (``original`` gets the rest)."""
        media_get = self.media.get
        clock = self.clock
        counters = self.counters
        port = self

        def datagram_received(data: bytes, addr: Any) -> None:
            if 127 < data[0] < 192 and len(data) >= 12:  # RTP or RTCP (RFC 7983)
                try:
                    if 191 < data[1] < 224:  # RTCP packet types 192-223 (RFC 5761)
                        port.receive_rtcp(data)
                        return
                    stream = media_get(data[8:12])
                    if stream is None:
                        port.receive_other(data)
                        return
                    try:
                        plain = port.srtp_rx.unprotect(data)
                    except SrtpError:
                        counters.srtp_failed += 1
                        return
                    stream.receive(plain, clock())
                except Exception as exc:  # noqa: BLE001 - a bug must cost one packet, not the socket (nor a log line each)
                    port.error(exc)
                return
            original(data, addr)

        return datagram_received

    def receive_other(self, data: bytes) -> None:
        """RTX, or media with an SSRC the client did not announce (learnt by payload type)."""
        key = data[8:12]
        stream = self.rtx.get(key)
        if stream is not None:
            try:
                plain = self.srtp_rx.unprotect(data)
            except SrtpError:
                self.counters.srtp_failed += 1
                return
            stream.receive_rtx(plain, self.clock())
            return
        pt = data[1] & 0x7F
        entry = self.payload_types.get(pt)
        layers = self.rid_layers.get(pt)
        if entry is None and layers is None:
            self.counters.unknown += 1
            return
        try:
            plain = self.srtp_rx.unprotect(data)
        except SrtpError:
            self.counters.srtp_failed += 1
            return
        if layers is not None:
            demux, rtx = layers
            found = demux.stream_of(plain, rtx)
            if found is not None:
                entry = (found, rtx)
        if entry is None:  # no rid (yet): nothing says which substream it is
            self.counters.unknown += 1
            return
        stream, is_rtx = entry
        ssrc = _SSRC.unpack(key)[0]
        if stream.selector is not None:
            stream.selector.learn_ssrc(stream.layer, ssrc, is_rtx)
        if is_rtx:
            if stream.rtx_ssrc is not None:
                self.rtx.pop(_SSRC.pack(stream.rtx_ssrc), None)
            stream.rtx_ssrc = ssrc
            self.rtx[key] = stream
            stream.receive_rtx(plain, self.clock())
            return
        if stream.ssrc is not None:
            self.media.pop(_SSRC.pack(stream.ssrc), None)
        self.media[key] = stream
        stream.new_source(ssrc)
        stream.receive(plain, self.clock())

    def receive_rtcp(self, data: bytes) -> None:
        try:
            plain = self.srtp_rx.unprotect_rtcp(data)
        except SrtpError:
            self.counters.srtp_failed += 1
            return
        self.counters.rtcp_received += 1
        self.on_rtcp(self, plain, self.clock())

    def error(self, exc: Exception) -> None:
        self.counters.errors += 1
        if not self._logged_error:
            self._logged_error = True
            log.error("fast path of the %s leg: a packet could not be handled (counted from now on)", self.name,
                      exc_info=exc)
