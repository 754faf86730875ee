"""What call setup and renegotiation share: the call's m-line pairs, and a client's answer to
the relay's offer carried over to the client that offered.

The relay stands between two offer/answer exchanges. It offers one client what the other
offered (``call.py`` at setup, ``renegotiation.py`` afterwards); when that client answers,
``apply_answer`` sets the answer on its leg, fixes the codecs and directions of the offering
leg's m-lines from it (VideoCall rule: the answerer's codecs are the call's codecs, both
directions), and makes the relay's answer for the client that offered. Everything is checked
before anything changes: a refused answer leaves the call as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiortc import RTCRtpTransceiver

from mediarelay import aiortc_hooks, sdp
from mediarelay.leg import Leg
from mediarelay.sdp import SdpError
from shared.messages import LegName


@dataclass(frozen=True)
class MediaPair:
    """One mirrored m-line: the caller leg's transceiver and the callee leg's for the same media."""

    kind: str
    caller: RTCRtpTransceiver
    callee: RTCRtpTransceiver

    def side(self, leg: LegName) -> RTCRtpTransceiver:
        return self.caller if leg == "caller" else self.callee


def other_leg(leg: LegName) -> LegName:
    return "callee" if leg == "caller" else "caller"


async def apply_answer(
    text: str, *, answerer: Leg, offerer: Leg,
    lines: Sequence[tuple[RTCRtpTransceiver, RTCRtpTransceiver]], offered_by: str,
) -> tuple[str, str]:
    """Set a client's answer to the relay's offer on its leg (``answerer``), then answer the
    client that offered (on ``offerer``) with the codecs the answer chose.

    ``lines``: for each media m-line of the offer, (the offerer leg's transceiver, the answerer
    leg's). ``offered_by`` names the other side in a refusal ("the caller"). Returns the relay's
    answer for the offering client and what was agreed, for the log ("audio audio/opus sendrecv").
    SdpError, before anything changes, when the answer's m-lines are not the offer's or one of
    them has no codec the other side offered.
    """
    answer = sdp.parse(text, "answer")
    # The relay's offer as aiortc keeps it, parsed: not printed and parsed again for its m-lines.
    offered = aiortc_hooks.session_descriptions(answerer.pc)[0]
    if offered is None:
        raise SdpError("there is no offer to answer")
    if [(m.kind, m.rtp.muxId) for m in answer.media] != [(m.kind, m.rtp.muxId) for m in offered.media]:
        raise SdpError("the answer's m-lines do not match the offer (same kinds and mids, same order)")
    by_mid = {m.rtp.muxId: m for m in answer.media}
    chosen = []
    for mine, theirs in lines:
        codecs = sdp.answer_codecs(aiortc_hooks.negotiated_codecs(mine), by_mid[str(theirs.mid)].rtp.codecs)
        if not codecs:
            raise SdpError(f"the answer's {mine.kind} m-line (mid {theirs.mid}) has no codec {offered_by} offered")
        chosen.append(codecs)
    await answerer.set_remote(text, "answer", answer)  # aiortc takes the parse: not read after
    for (mine, theirs), codecs in zip(lines, chosen, strict=True):
        aiortc_hooks.set_negotiated_codecs(mine, codecs)
        # The relay sends the offering client what it receives from the answering one, and the reverse.
        mine.direction = sdp.reverse_direction(theirs.currentDirection or "inactive")
    relay_answer = await offerer.set_local("answer")
    pairs = zip(lines, chosen, strict=True)
    agreed = ", ".join(f"{mine.kind} {codecs[0].mimeType} {mine.direction}" for (mine, _), codecs in pairs)
    return relay_answer, agreed
