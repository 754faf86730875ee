"""Simulcast in SDP: what a caller's offer simulcasts, and the relay's SDP that accepts it (pure).

aiortc knows nothing of simulcast: its parser drops ``a=rid`` and ``a=simulcast``, and its
answer would accept one plain stream (the browser then sends only its first encoding). So
the relay reads the caller's raw SDP here and writes the lines aiortc leaves out into the
relay's own SDP for the caller, before aiortc sets it (``Leg.set_local``'s ``edit``).

As in Janus's VideoCall, only the caller simulcasts, and only on its first video m-line
(a callee's simulcast, or a later video m-line's, is left out of the answer: that browser
sends one plain stream). The callee is offered one plain video stream (aiortc's own offer).

Two forms, as browsers send them:

- **rid** (RFC 8853, what janus.js's ``simulcast: true`` and ``sendEncodings`` give):
  ``a=rid:h send`` lines, ``a=simulcast:send h;m;l`` and the ``rtp-stream-id`` /
  ``repaired-rtp-stream-id`` header extensions. The answer says ``a=rid:h recv`` for each
  and ``a=simulcast:recv h;m;l``, and keeps both extensions with the offer's ids. No SSRC is
  announced: the relay learns each layer's SSRC from the extension on its first packets.
  Layer order: janus.js and Chromium list the encodings highest first (h, m, l; janus.js's
  ``scaleResolutionDownBy`` 1, 2, 4), and Janus reads rids that way by default (the jsep's
  ``rid_order`` "hml"), so the *last* rid is substream 0; with ``rid_order`` "lmh" the first.
- **SSRC** (``a=ssrc-group:SIM`` of a munged offer, RTX by ``a=ssrc-group:FID``): the SSRCs
  in SIM-group order, lowest first, as Janus maps them (``ssrcs[0]`` is substream 0).
  Nothing to add to the answer.

Refusals are ``SdpError`` sentences (more than three layers, a rid without its ``a=rid``
line, rid simulcast without the rtp-stream-id extension).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mediarelay.sdp import SdpError

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
#: Substreams 0, 1 and 2, as Janus has them.
MAX_LAYERS = 3
#: RFC 8851 rid-id characters; Janus reads at most 15 of them, browsers use one or two.
_RID = re.compile(r"[A-Za-z0-9_-]{1,16}")


@dataclass(frozen=True)
class Simulcast:
    """The layers one m-line of the caller's offer sends, lowest first."""

    mid: str
    form: Literal["rid", "ssrc"]
    #: rid form: the rids, lowest layer first; ``paused``: those offered paused (``~h``).
    rids: tuple[str, ...] = ()
    paused: frozenset[str] = frozenset()
    #: The rids as the offer's a=simulcast lists them (the answer mirrors this order).
    offered_order: tuple[str, ...] = ()
    #: SSRC form: the media SSRCs, lowest layer first, and media SSRC -> RTX SSRC.
    ssrcs: tuple[int, ...] = ()
    rtx: dict[int, int] = field(default_factory=dict)
    #: Header extension ids (rid form): rtp-stream-id, and repaired-rtp-stream-id if offered.
    rid_extension: int | None = None
    repaired_rid_extension: int | None = None

    @property
    def count(self) -> int:
        return len(self.rids) if self.form == "rid" else len(self.ssrcs)


def read_offer(text: str, rid_order: Literal["hml", "lmh"] = "hml") -> Simulcast | None:
    """The simulcast of the offer's first video m-line, or None when it sends one stream.

    ``text`` is an offer ``sdp.parse`` accepted (the same text, not aiortc's reprint).
    ``rid_order``: the jsep's, as Janus reads it: "hml" (default) lists rids highest first,
    "lmh" lowest first.
    """
    section = next((s for s in _sections(text) if s[0].startswith("m=video")), None)
    if section is None:
        return None
    attrs = [_attribute(line) for line in section[1:]]
    mid = next((value for name, value in attrs if name == "mid"), "")
    simulcast = [value for name, value in attrs if name == "simulcast"]
    if simulcast:
        return _rid_form(mid, attrs, simulcast, rid_order)
    return _ssrc_form(mid, attrs)


def _rid_form(mid: str, attrs: list[tuple[str, str]], simulcast: list[str],
              rid_order: Literal["hml", "lmh"]) -> Simulcast | None:
    where = f"the offer's video m-line (mid {mid})"
    if len(simulcast) > 1:
        raise SdpError(f"{where} has more than one a=simulcast line")
    send = _send_list(simulcast[0], where)
    if send is None:
        return None  # recv only: what the caller would like to receive, not what it sends
    declared: dict[str, str] = {}
    for name, value in attrs:
        if name != "rid":
            continue
        words = value.split()
        if len(words) < 2 or not _RID.fullmatch(words[0]) or words[1] not in ("send", "recv"):
            raise SdpError(f"{where} has a malformed a=rid line")
        declared[words[0]] = words[1]
    order, paused = [], set()
    for item in send:
        rid = item.removeprefix("~")
        if declared.get(rid) != "send":
            raise SdpError(f"{where} simulcasts rid {rid!r} without an a=rid:{rid} send line")
        if rid in order:
            raise SdpError(f"{where} lists rid {rid!r} twice in a=simulcast")
        order.append(rid)
        if item.startswith("~"):
            paused.add(rid)
    if len(order) > MAX_LAYERS:
        raise SdpError(f"{where} simulcasts {len(order)} layers; the relay takes at most {MAX_LAYERS}")
    if len(order) < 2:
        return None  # one encoding: a plain stream
    extensions = _extensions(attrs)
    rid_extension = extensions.get(RID_URI)
    if rid_extension is None:
        raise SdpError(f"{where} simulcasts by rid without the {RID_URI} header extension")
    rids = tuple(reversed(order)) if rid_order == "hml" else tuple(order)
    return Simulcast(mid=mid, form="rid", rids=rids, paused=frozenset(paused),
                     offered_order=tuple(order), rid_extension=rid_extension,
                     repaired_rid_extension=extensions.get(REPAIRED_RID_URI))


def _send_list(value: str, where: str) -> list[str] | None:
    """The send part of ``a=simulcast`` ("send h;~m;l recv x"): the first alternative of each
    layer, a paused one marked "~"; None without a send part."""
    words = value.split()
    for direction, streams in zip(words[::2], words[1::2], strict=False):
        if direction != "send":
            continue
        items = []
        for layer in streams.removeprefix("rid=").split(";"):  # "rid=": Firefox's draft form
            first = layer.split(",")[0]
            if not _RID.fullmatch(first.removeprefix("~")):
                raise SdpError(f"{where} has a malformed a=simulcast line")
            items.append(first)
        return items
    if words and words[0] not in ("send", "recv"):
        raise SdpError(f"{where} has a malformed a=simulcast line")
    return None


def _ssrc_form(mid: str, attrs: list[tuple[str, str]]) -> Simulcast | None:
    where = f"the offer's video m-line (mid {mid})"
    groups = [value.split() for name, value in attrs if name == "ssrc-group"]
    sim = [g[1:] for g in groups if g and g[0] == "SIM"]
    if not sim:
        return None
    if len(sim) > 1:
        raise SdpError(f"{where} has more than one a=ssrc-group:SIM")
    try:
        ssrcs = tuple(int(s) for s in sim[0])
        fid = {int(g[1]): int(g[2]) for g in groups if g[0] == "FID" and len(g) == 3}
    except ValueError:
        raise SdpError(f"{where} has a malformed a=ssrc-group line") from None
    if len(set(ssrcs)) != len(ssrcs) or any(not 0 < s < 2**32 for s in ssrcs):
        raise SdpError(f"{where} has a malformed a=ssrc-group:SIM")
    if len(ssrcs) > MAX_LAYERS:
        raise SdpError(f"{where} simulcasts {len(ssrcs)} layers; the relay takes at most {MAX_LAYERS}")
    if len(ssrcs) < 2:
        return None
    return Simulcast(mid=mid, form="ssrc", ssrcs=ssrcs, rtx={s: fid[s] for s in ssrcs if s in fid})


def accept(text: str, simulcast: Simulcast | None) -> str:
    """The relay's SDP for the caller (its answer, or its re-offer), accepting ``simulcast``.

    For the rid form, the m-line with that mid gets the two rid header extensions (the
    offer's ids), ``a=rid:<rid> recv`` for each layer and ``a=simulcast:recv``, unless the
    relay does not receive on it (rejected, sendonly or inactive). Idempotent; other forms
    and other m-lines are left as they are.
    """
    if simulcast is None or simulcast.form != "rid":
        return text
    newline = "\r\n" if "\r\n" in text else "\n"
    sections = _sections(text)
    out: list[str] = []
    for section in sections:
        attrs = [_attribute(line) for line in section[1:]]
        mid = next((value for name, value in attrs if name == "mid"), None)
        port = section[0].split()[1] if len(section[0].split()) > 1 else "0"
        receives = not any(name in ("sendonly", "inactive") for name, _ in attrs)
        if mid != simulcast.mid or port == "0" or not receives or any(name == "simulcast" for name, _ in attrs):
            out += section
            continue
        known = _extensions(attrs)
        extmaps = [f"a=extmap:{ext_id} {uri}" for uri, ext_id in (
            (RID_URI, simulcast.rid_extension), (REPAIRED_RID_URI, simulcast.repaired_rid_extension))
            if ext_id is not None and uri not in known]
        last_extmap = max((i for i, line in enumerate(section) if line.startswith("a=extmap:")), default=0)
        body = section[:last_extmap + 1] + extmaps + section[last_extmap + 1:]
        trailing = []
        while body and not body[-1]:
            trailing.append(body.pop())
        layers = ";".join(("~" if rid in simulcast.paused else "") + rid for rid in simulcast.offered_order)
        body += [f"a=rid:{rid} recv" for rid in simulcast.offered_order] + [f"a=simulcast:recv {layers}"]
        out += body + trailing
    return newline.join(out)


def _sections(text: str) -> list[list[str]]:
    """The SDP's lines cut before each m-line: the session part first, then one per m-line."""
    sections: list[list[str]] = [[]]
    for line in re.split(r"\r?\n", text):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _attribute(line: str) -> tuple[str, str]:
    """("rid", "h send") for "a=rid:h send"; ("", "") for a line that is not an attribute."""
    if not line.startswith("a="):
        return "", ""
    name, _, value = line[2:].partition(":")
    return name.strip(), value.strip()


def _extensions(attrs: list[tuple[str, str]]) -> dict[str, int]:
    """Header extension uri -> id, from a=extmap lines ("4 urn:..." or "4/sendonly urn:...")."""
    found = {}
    for name, value in attrs:
        if name != "extmap":
            continue
        words = value.split()
        ext_id = words[0].split("/")[0] if words else ""
        if len(words) >= 2 and ext_id.isdigit():
            found[words[1]] = int(ext_id)
    return found

