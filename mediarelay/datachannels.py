"""Data channels of a call: every message relayed to the other leg, on a channel of the same label.

The relay terminates SCTP on each leg (aiortc does), so a data channel is two channels, one per
leg, joined here by label. A message that the caller's client sends on channel ``chat`` is sent
to the callee's client on the callee leg's channel ``chat``, and the reverse; text stays text,
binary stays binary. Janus relays by label too (``janus_videocall_incoming_data`` passes the label
on), but only once the other client opened a channel of that label itself: with a channel on one
side only, nothing arrives. Here, when a leg's client opens a channel, the relay opens one with
the same label, protocol, ordering and reliability on the other leg at once (when that leg has an
SCTP transport), so a channel opened on one side works end to end.

Closing follows the label: when a leg has no open channel of a label left, the other leg's
channels of that label are closed too.

A receiver slower than its sender must not grow the worker without bound: at most
``MAX_BUFFERED`` bytes wait for one channel (while the relay's channel is still opening, and in
aiortc's send queue); messages beyond that are dropped and counted (``stats``), as are messages
for a leg without SCTP and messages larger than the receiver accepts.

This module owns no PeerConnection and no other state of the call; ``Call`` creates it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.exceptions import InvalidStateError

from shared.logs import call_log
from shared.messages import LegName

log = logging.getLogger(__name__)

#: Bytes that may wait for one channel (opening, or queued in aiortc) before messages are dropped.
MAX_BUFFERED = 1024 * 1024


@dataclass
class DataStats:
    """Messages relayed and dropped, per leg the messages came from."""

    relayed: dict[str, int] = field(default_factory=lambda: {"caller": 0, "callee": 0})
    dropped: dict[str, int] = field(default_factory=lambda: {"caller": 0, "callee": 0})
    #: Channels the relay opened itself, per leg it opened them on.
    opened: dict[str, int] = field(default_factory=lambda: {"caller": 0, "callee": 0})


@dataclass
class _Waiting:
    """Messages for a channel the relay opened that is not open yet."""

    messages: deque[str | bytes] = field(default_factory=deque)
    size: int = 0


class DataChannelRelay:
    """Joins the data channels of a call's two PeerConnections by label."""

    def __init__(self, call_id: str, pcs: dict[LegName, RTCPeerConnection]) -> None:
        self.call_id = call_id
        self.stats = DataStats()
        self._pcs = pcs
        self._channels: dict[LegName, list[RTCDataChannel]] = {"caller": [], "callee": []}
        self._waiting: dict[int, _Waiting] = {}
        self._warned: set[int] = set()
        #: Per leg, ``record(message)`` while that leg's user is recorded (``recorder.Track.message``).
        self.record: dict[LegName, Callable[[str | bytes], None]] = {}
        for leg, pc in pcs.items():
            pc.on("datachannel", partial(self._guarded, self._on_remote_channel, leg))

    def channels(self, leg: LegName) -> list[RTCDataChannel]:
        """The live channels of a leg (opened by its client or by the relay)."""
        return list(self._channels[leg])

    # --- channels -----------------------------------------------------------------------------

    def _on_remote_channel(self, leg: LegName, channel: RTCDataChannel) -> None:
        """A leg's client opened a channel: follow it, and make sure the other leg has its twin."""
        log.info("call %s: %s opened data channel %r (id %s)", self.call_id, leg, channel.label, channel.id,
                 extra=call_log(self.call_id))
        self._follow(leg, channel)
        self._target(_other(leg), channel)

    def _follow(self, leg: LegName, channel: RTCDataChannel) -> None:
        self._channels[leg].append(channel)
        channel.on("message", partial(self._guarded, self._on_message, leg, channel))
        channel.on("open", partial(self._guarded, self._on_open, channel))
        channel.on("close", partial(self._guarded, self._on_close, leg, channel))

    def _target(self, leg: LegName, like: RTCDataChannel) -> RTCDataChannel | None:
        """The channel of ``leg`` that carries ``like``'s label, opened by the relay if needed."""
        for channel in self._channels[leg]:
            if channel.label == like.label and channel.readyState in ("connecting", "open"):
                return channel
        pc = self._pcs[leg]
        if pc.sctp is None or pc.connectionState == "closed":
            return None  # no m=application on that leg: nowhere to open it
        channel = pc.createDataChannel(
            like.label, maxPacketLifeTime=like.maxPacketLifeTime, maxRetransmits=like.maxRetransmits,
            ordered=like.ordered, protocol=like.protocol)
        self._waiting[id(channel)] = _Waiting()
        self.stats.opened[leg] += 1
        self._follow(leg, channel)
        log.info("call %s: relay opened data channel %r on the %s leg", self.call_id, like.label, leg,
                 extra=call_log(self.call_id))
        return channel

    def _on_open(self, channel: RTCDataChannel) -> None:
        waiting = self._waiting.pop(id(channel), None)
        if waiting is not None:
            for message in waiting.messages:
                self._send(channel, message)

    def _on_close(self, leg: LegName, channel: RTCDataChannel) -> None:
        if channel in self._channels[leg]:
            self._channels[leg].remove(channel)
        self._waiting.pop(id(channel), None)
        self._warned.discard(id(channel))
        if any(c.label == channel.label for c in self._channels[leg]):
            return
        for twin in [c for c in self._channels[_other(leg)] if c.label == channel.label]:
            log.info("call %s: data channel %r closed on the %s leg; closing it on the other",
                     self.call_id, channel.label, leg, extra=call_log(self.call_id))
            twin.close()

    # --- messages -----------------------------------------------------------------------------

    def _on_message(self, leg: LegName, channel: RTCDataChannel, message: str | bytes) -> None:
        record = self.record.get(leg)
        if record is not None:  # what this user sends, as Janus records it before relaying
            record(message)
        target = self._target(_other(leg), channel)
        if target is None:
            self._drop(leg, channel, "the other leg has no data channel transport")
            return
        size = _size(message)
        waiting = self._waiting.get(id(target))
        queued = target.bufferedAmount + (waiting.size if waiting is not None else 0)
        if queued + size > MAX_BUFFERED:
            self._drop(leg, target, f"more than {MAX_BUFFERED} bytes wait for the receiver")
            return
        if waiting is not None:  # the relay's channel is still opening
            waiting.messages.append(message)
            waiting.size += size
        elif not self._send(target, message):
            self._drop(leg, target, "the receiver refused the message")
            return
        self.stats.relayed[leg] += 1

    def _send(self, channel: RTCDataChannel, message: str | bytes) -> bool:
        try:
            channel.send(message)
        except (InvalidStateError, ValueError) as exc:  # closing, or over the receiver's max size
            log.debug("call %s: data channel %r: %r", self.call_id, channel.label, exc, extra=call_log(self.call_id))
            return False
        return True

    def _drop(self, leg: LegName, channel: RTCDataChannel, why: str) -> None:
        self.stats.dropped[leg] += 1
        if id(channel) not in self._warned:  # once per channel: a flood must not flood the log
            self._warned.add(id(channel))
            log.warning("call %s: dropping data from the %s leg on %r: %s", self.call_id, leg, channel.label, why,
                        extra=call_log(self.call_id))

    def _guarded(self, handler: Callable[..., None], *args: Any) -> None:
        """pyee re-raises a listener's exception into aiortc's SCTP task: never let one escape."""
        try:
            handler(*args)
        except Exception:
            log.exception("call %s: data channel relay failed", self.call_id, extra=call_log(self.call_id))


def _other(leg: LegName) -> LegName:
    return "callee" if leg == "caller" else "caller"


def _size(message: str | bytes) -> int:
    return len(message.encode("utf-8")) if isinstance(message, str) else len(message)
