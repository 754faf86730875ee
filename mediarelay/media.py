"""A call's media: the fast path of both legs, linked once both are connected.

The adapter between aiortc's legs, the event loop's clock, and the pure pieces: ``routes``
(what goes where), ``forwarder`` (the streams and ports of the hot path), ``rtcp`` (the RTCP
the relay owes each client and its answers to theirs, started and stopped from here).

- When both legs are connected: the routes are read from both legs' SDP, each leg's sockets
  are tapped (``Port``), each route becomes a ``Link`` (a ``RecvStream`` on the source leg
  feeding a ``SendStream`` on the sink leg), and each video sender is asked for a keyframe
  (as Janus does when a peer attaches). A leg that fails or closes unlinks everything.
  ``Call`` tells it when a leg's connection state changes and when a renegotiation or an
  ICE restart changed a leg (link again: numbering continues).
- ``apply`` carries out ``set``: audio/video of a *sender* stop or resume relaying that
  direction (resuming continues the numbering and asks for a keyframe), ``bitrate`` caps the
  REMB it hears.

Nothing here runs per packet.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from functools import partial

from mediarelay import aiortc_hooks, routes
from mediarelay.forwarder import Counters, RecvStream, SendStream
from mediarelay.leg import Leg, LegSettings
from mediarelay.media_flow import MediaFlow
from mediarelay.outbox import HeldSender, outbox
from mediarelay.port import Link, Port
from mediarelay.rtcp import CallRtcp
from mediarelay.simulcast import ChangeKind, LayerSource, SimulcastSelector, SimulcastSettings, layer_sources
from shared.logs import call_log
from shared.messages import MEDIA_KINDS

log = logging.getLogger(__name__)


class CallMedia:
    """The media of one call's two legs (``Call`` makes one and tells it what changed)."""

    def __init__(self, call_id: str, legs: dict[str, Leg]) -> None:
        self.call_id = call_id
        self.legs = legs
        self.counters = Counters()
        self.linked = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self.ports: dict[str, Port] = {}
        #: What is forwarded now; changed in place (``rtcp`` reads the same list).
        self.links: list[Link] = []
        #: Kept across re-links so numbering stays continuous: by (leg, mid).
        self._send_streams: dict[tuple[str, str], SendStream] = {}
        self._recv_streams: dict[tuple[str, str], RecvStream] = {}
        #: Told after each link (the first, and after a renegotiation) and after an unlink (a
        #: leg failed or closed): the call's recordings follow the streams (``Call``).
        self.on_linked: Callable[[], None] | None = None
        self.on_unlinked: Callable[[], None] | None = None
        #: Simulcast (what the sender's SDP says is ``Leg.simulcast``, carried by the routes):
        #: what each *receiving* leg asked for with ``set``, and the selectors of the m-lines
        #: forwarded to it (kept across re-links by (receiving leg, its mid), as send streams are).
        self.simulcast_settings: dict[str, SimulcastSettings] = {name: SimulcastSettings() for name in legs}
        self.selectors: dict[str, list[SimulcastSelector]] = {name: [] for name in legs}
        self._selectors: dict[tuple[str, str], SimulcastSelector | None] = {}
        #: ``on_simulcast(receiver, codec, kind, value)``: the forwarded substream or temporal
        #: layer changed for ``receiver`` (the worker sends the VideoCall ``simulcast`` event).
        self.on_simulcast: Callable[[str, str, ChangeKind, int], None] | None = None
        self.rtcp = CallRtcp(call_id, self.links, self.ports, {name: leg.settings for name, leg in legs.items()},
                             self.counters)

    def __repr__(self) -> str:
        return f"<CallMedia {self.call_id} linked={self.linked} {self.counters.as_dict()}>"

    # --- lifecycle --------------------------------------------------------------------------------

    def connection_changed(self, name: str) -> None:
        """The connection state of leg ``name``'s PC changed (``Call`` says so, after the leg
        updated ``leg.state``): link once both legs are connected, unlink when one fails or closes."""
        state = self.legs[name].pc.connectionState
        if state == "connected":
            if not self.linked and all(leg.state == "connected" for leg in self.legs.values()):
                self.link()
        elif state in ("failed", "closed"):
            self.unlink()

    def sender_stopped(self, name: str, ssrc: int) -> None:
        """A relay sender on leg ``name`` stops (its PC closes): BYE, then nothing more to it."""
        self.rtcp.bye(name, ssrc)

    def link(self) -> None:
        """Tap both legs and forward between them, as both legs' SDP says (again after a
        renegotiation or an ICE restart: numbering continues)."""
        if self.closed or not all(leg.state == "connected" for leg in self.legs.values()):
            return
        now = self._loop.time()
        try:
            sections = {name: self._sections(leg) for name, leg in self.legs.items()}
            for name, leg in self.legs.items():
                self._connect_port(name, leg)
        except (ValueError, AttributeError) as exc:  # e.g. a restarted ICE agent not up yet: next time
            log.info("call %s: media not (re)linked now: %s", self.call_id, exc, extra=call_log(self.call_id))
            return
        for port in self.ports.values():
            port.clear()
        self.links.clear()
        for selectors in self.selectors.values():
            selectors.clear()
        (first, a), (second, b) = sections.items()
        for source, sink, plan in ((first, second, routes.plan(a, b)), (second, first, routes.plan(b, a))):
            for route in plan:
                self._add_link(source, sink, route)
        first_link = not self.linked
        self.linked = True
        self.rtcp.start({name: next((s.local_ssrc for s in leg_sections if s.local_ssrc), None)
                         for name, leg_sections in sections.items()})
        for link in self.links:
            self.apply(link.source, self.legs[link.source].settings)
            if first_link:
                self.rtcp.keyframe(link.recv_stream, now)
        log.info("call %s: media linked (%s)", self.call_id, ", ".join(
            f"{k.source}->{k.sink} {k.recv_stream.kind} {k.recv_stream.mid}->{k.send_stream.mid}"
            for k in self.links) or "nothing", extra=call_log(self.call_id))
        if self.on_linked is not None:
            self.on_linked()

    def changed(self, what: str) -> None:
        """A renegotiation or an ICE restart changed a leg (``Call.changed``): link again."""
        if self.linked:
            self.link()

    def _sections(self, leg: Leg) -> list[routes.Section]:
        # aiortc's own parsed descriptions: printing and parsing 4 SDPs was 3/4 of a link's time
        local, remote = aiortc_hooks.session_descriptions(leg.pc)
        if local is None or remote is None:
            raise ValueError(f"the {leg.name} leg has no SDP")
        return routes.sections(local, remote, local_is_answer=local.type == "answer", simulcast=leg.simulcast)

    def _connect_port(self, name: str, leg: Leg) -> None:
        transceivers = [t for t in leg.pc.getTransceivers() if t.kind in MEDIA_KINDS]
        if not transceivers:
            return
        dtls = transceivers[0].receiver.transport
        socket = aiortc_hooks.media_socket(dtls)
        port = self.ports.get(name)
        if port is None:
            port = self.ports[name] = Port(name, self.counters, self._loop.time, self.rtcp.on_rtcp)
        port.connect(socket.srtp_rx, socket.srtp_tx, socket.sendto, socket.remote, self._held(socket))
        aiortc_hooks.tap_datagrams(dtls, port.handler, port.tapped)
        for (leg_name, _), send_stream in self._send_streams.items():
            if leg_name == name:
                port.feed(send_stream)

    def _held(self, socket: aiortc_hooks.MediaSocket) -> Callable[[bytes | bytearray], None]:
        """How RTP is sent to a leg: protected and held until the end of the loop iteration
        (``outbox``), in a ``sendmmsg`` array where there is one (``aiortc_hooks.srtp_send_batch``)."""

        def failed(count: int) -> None:
            self.counters.send_failed += count

        box = outbox(self._loop)
        batch = aiortc_hooks.srtp_send_batch(socket.srtp_tx, socket.transport, socket.remote, box.hold, failed)
        if batch is not None:
            return batch.send
        held, protect, remote = HeldSender(socket.transport, box, failed), socket.srtp_tx.protect, socket.remote

        def send(packet: bytes | bytearray) -> None:
            held.sendto(protect(packet), remote)  # type: ignore[arg-type]

        return send

    def _add_link(self, source: str, sink: str, route: routes.Route) -> None:
        sink_port, source_port = self.ports.get(sink), self.ports.get(source)
        if sink_port is None or source_port is None:
            return
        send_stream = self._send_streams.get((sink, route.sink_mid))
        if send_stream is None or send_stream.ssrc != route.sink_ssrc:
            send_stream = SendStream(route.kind, route.sink_mid, route.sink_ssrc, route.clock_rate, self.counters,
                                     rtx_ssrc=route.sink_rtx_ssrc, rtx_payload_types=route.sink_rtx,
                                     cname=route.sink_cname, seq_start=random.getrandbits(15),
                                     ts_start=random.getrandbits(32), rtx_seq_start=random.getrandbits(15))
            self._send_streams[(sink, route.sink_mid)] = send_stream
        else:
            send_stream.rtx_ssrc, send_stream.rtx_payload_types = route.sink_rtx_ssrc, route.sink_rtx
        sink_port.feed(send_stream)
        if route.simulcast is not None and route.kind == "video":
            self._add_simulcast(source, sink, route, send_stream, source_port)
            return
        recv_stream = self._recv_stream(source, route.source_mid, route)
        recv_stream.link(send_stream, route.payload_types, route.source_rtx, route.codec_names, route.extensions)
        source_port.add(recv_stream, route.source_ssrcs, route.source_rtx_ssrcs, list(route.payload_types),
                        list(route.source_rtx))
        self.links.append(Link(source, sink, recv_stream, send_stream))

    def _recv_stream(self, source: str, key: str, route: routes.Route) -> RecvStream:
        """The ``RecvStream`` kept for ``key`` (a mid, or a simulcast substream of one) of leg ``source``."""
        recv_stream = self._recv_streams.get((source, key))
        if recv_stream is None:
            leg = self.legs[source]
            flow = next((f for f in leg.flows if f.mid == route.source_mid), None)
            if flow is None:
                flow = MediaFlow(kind=route.kind, mid=route.source_mid)
                leg.flows.append(flow)
            recv_stream = RecvStream(route.kind, route.source_mid, route.clock_rate, flow, self.counters,
                                     on_media=leg.media_changed, nack=route.nack)
            recv_stream.on_gap = partial(self.rtcp.on_gap, source)
            self._recv_streams[(source, key)] = recv_stream
        return recv_stream

    def _add_simulcast(self, source: str, sink: str, route: routes.Route, send_stream: SendStream,
                       source_port: Port) -> None:
        """A simulcast m-line: a ``RecvStream`` per substream (its own SSRC, statistics, NACKs,
        PLIs), all feeding ``send_stream`` through one ``SimulcastSelector``; a ``Link`` each."""
        assert route.simulcast is not None
        layers = layer_sources(route.simulcast)
        codec = route.codec_names[next(iter(route.payload_types))].lower()
        selector = self._selector(source, sink, route, layers, send_stream, codec)
        streams = [self._recv_stream(source, f"{route.source_mid}#{layer.index}", route) for layer in layers]
        for stream, layer in zip(streams, layers, strict=True):
            stream.selector, stream.layer = selector, layer.index
            # An unsupported codec (no keyframe to switch at): the top substream alone, as is.
            linked = selector is not None or layer is layers[-1]
            stream.link(send_stream if linked else None, route.payload_types, route.source_rtx, route.codec_names,
                        route.extensions)
            if linked:
                self.links.append(Link(source, sink, stream, send_stream))
        source_port.add_layers(streams, layers, list(route.payload_types), list(route.source_rtx),
                               route.simulcast.rid_extension, route.simulcast.repaired_rid_extension)
        if selector is not None:
            self.selectors[sink].append(selector)

    def _selector(self, source: str, sink: str, route: routes.Route, layers: tuple[LayerSource, ...],
                  send_stream: SendStream, codec: str) -> SimulcastSelector | None:
        """The selector of the m-line ``route`` feeds (kept across re-links while its codec,
        substreams and outgoing SSRC stay), with what the receiver asked for with ``set``."""
        key = (sink, route.sink_mid)
        selector = self._selectors.get(key)
        if (selector is not None and selector.codec == codec and selector.ssrc == send_stream.ssrc
                and sorted(selector.layers) == [layer.index for layer in layers]):
            return selector
        try:
            selector = SimulcastSelector(codec, layers, send_stream.ssrc,
                                         on_change=partial(self._simulcast_changed, sink, codec),
                                         request_keyframe=partial(self._layer_keyframe, source, route.source_mid))
        except ValueError as exc:
            log.info("call %s: %s; the top substream is relayed as it is", self.call_id, exc,
                     extra=call_log(self.call_id))
            selector = None
        else:
            settings = self.simulcast_settings[sink]
            selector.target_substream, selector.target_temporal = settings.substream, settings.temporal
            selector.auto = settings.auto
            selector.set_fallback(settings.fallback)
        self._selectors[key] = selector
        return selector

    def _layer_keyframe(self, source: str, mid: str, index: int, now: float) -> None:
        """The selector wants a keyframe of substream ``index``: a PLI on that substream's SSRC."""
        stream = self._recv_streams.get((source, f"{mid}#{index}"))
        if stream is not None and self.linked:
            self.rtcp.keyframe(stream, now)

    def _simulcast_changed(self, receiver: str, codec: str, kind: ChangeKind, value: int) -> None:
        log.info("call %s: %s receives simulcast %s %d", self.call_id, receiver, kind, value,
                 extra=call_log(self.call_id))
        if self.on_simulcast is not None:
            try:
                self.on_simulcast(receiver, codec, kind, value)
            except Exception:  # runs inside the fast path: a broken listener must not cost the packet
                log.exception("call %s: simulcast listener failed", self.call_id, extra=call_log(self.call_id))

    def unlink(self) -> None:
        """Stop forwarding (a leg failed or closed): packets still arriving are only counted."""
        if not self.linked:
            return
        self.linked = False
        for link in self.links:
            link.recv_stream.send_stream = None
            link.send_stream.disconnect()
        for port in self.ports.values():
            port.disconnect()
        self.rtcp.stop()
        log.info("call %s: media unlinked %s", self.call_id, self.counters.as_dict(), extra=call_log(self.call_id))
        if self.on_unlinked is not None:
            self.on_unlinked()

    def close(self) -> None:
        self.closed = True
        self.unlink()
        self.rtcp.stop()

    # --- set ----------------------------------------------------------------------------------------

    def apply(self, sender: str, settings: LegSettings) -> None:
        """``set`` for the media ``sender`` sends: audio/video relayed or not, bitrate cap."""
        now = self._loop.time()
        for link in self.links:
            if link.source != sender:
                continue
            stream = link.recv_stream
            enabled = settings.audio if stream.kind == "audio" else settings.video
            if enabled and not stream.enabled:
                # Resuming: the receiver sees the numbering go on and, for video, a keyframe soon.
                link.send_stream.seq.sync()
                link.send_stream.ts.sync()
                self.rtcp.keyframe(stream, now)
            stream.enabled = enabled
        if settings.bitrate and self.linked:
            self.rtcp.send_remb(sender)
        if self.linked:
            self.rtcp.cap_changed(sender)  # also a ceiling on the substream chosen for it

    def configure_simulcast(self, receiver: str, *, substream: int | None = None, temporal: int | None = None,
                            fallback: int | None = None, auto: bool | None = None) -> None:
        """``set`` of ``receiver`` for what it receives of a simulcasting peer (values already
        checked: 0..2, fallback >= 0): kept, and applied now to the selectors feeding it.
        ``substream`` pins the substream (auto off) unless ``auto`` says otherwise."""
        settings = self.simulcast_settings[receiver]
        now = self._loop.time()
        if fallback is not None:
            settings.fallback = fallback
        if substream is not None:
            settings.substream = substream
            settings.auto = False
        if temporal is not None:
            settings.temporal = temporal
        if auto is not None:
            settings.auto = auto
        for selector in self.selectors[receiver]:
            if fallback is not None:
                selector.set_fallback(fallback)
            if substream is not None or temporal is not None:
                selector.auto = settings.auto  # pinned (or not) first: set_target aims once, with the event
                selector.set_target(substream, temporal, now)
            elif auto is not None:
                selector.set_auto(settings.auto, now)

    # --- introspection ------------------------------------------------------------------------------

    def recv_stream(self, leg: str, mid: str) -> RecvStream | None:
        """What leg ``leg``'s client sends on ``mid``, once linked (kept across re-links)."""
        return self._recv_streams.get((leg, mid))

    def send_stream(self, leg: str, mid: str) -> SendStream | None:
        """What the relay sends leg ``leg``'s client on ``mid``, once linked."""
        return self._send_streams.get((leg, mid))

    def sent_mids(self, leg: str) -> list[str]:
        """The m-lines on which the relay has a sender towards leg ``leg``'s client."""
        return [mid for (name, mid) in self._send_streams if name == leg]

    def stats(self) -> dict[str, object]:
        """Counters and, per linked direction, what was forwarded (tests, benchmark)."""
        return {
            "counters": self.counters.as_dict(),
            "routes": [{"source": k.source, "sink": k.sink, "kind": k.recv_stream.kind, "mid": k.recv_stream.mid,
                        "ssrc": k.recv_stream.ssrc, "enabled": k.recv_stream.enabled,
                        "packets": k.send_stream.packets, "octets": k.send_stream.octets,
                        "estimate": k.send_stream.estimate,
                        # a simulcast substream: its number, and the one forwarded now
                        "substream": k.recv_stream.layer if k.recv_stream.selector is not None else None,
                        "forwarded_substream": k.recv_stream.selector.substream
                        if k.recv_stream.selector is not None else None} for k in self.links],
            "rtt": self.rtcp.rtt,
        }
