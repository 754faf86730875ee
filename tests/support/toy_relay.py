"""What a relay worker answers, without a worker: the doubles of the plugin runner's tests
(``tests/signaling``) answer the requests they do not refuse with this."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared import messages as m


def worker_answer(body: m.Request[Any], *, offer: str = "relay-offer", answer: str = "relay-answer",
                  sdp: str = "relay-sdp") -> BaseModel:
    """The result a worker gives ``body`` when it succeeds: SDP texts are placeholders."""
    match body:
        case m.CallCreate():
            return m.CallCreateResult(callee_offer=offer)
        case m.CallAccept():
            return m.CallAcceptResult(caller_answer=answer)
        case m.LegRenegotiate(sdp_type=sdp_type):
            return m.LegRenegotiateResult(sdp_type=sdp_type, sdp=sdp)
        case _:
            return m.Empty()


class ToyRelay:
    """A relay worker's answers without a worker: enough for a call's signalling to proceed
    (set as a server's ``plugin.relay``)."""

    async def request(self, body: m.Request[Any]) -> Any:
        return worker_answer(body)
