"""Random sequences of requests and relay outcomes against the VideoCall state machine.

Invariants that must hold whatever clients do: the machine never raises, every plugin
message is answered by exactly one event carrying its transaction, names map to live
handles both ways, and a call is always shared by exactly its two handles.
"""

from __future__ import annotations

import random
from typing import Any

from signaling import videocall as vc

NAMES = ["alice", "bob", "carol", "", 42, None, "x" * 200]
OFFER = {"type": "offer", "sdp": "v=0\r\n"}
ANSWER = {"type": "answer", "sdp": "v=0\r\n"}


def random_body(rng: random.Random) -> Any:
    request = rng.choice(["list", "register", "call", "accept", "set", "hangup", "LIST", "bogus", 5, None])
    body: dict[str, Any] = {} if request is None else {"request": request}
    if rng.random() < 0.7:
        body["username"] = rng.choice(NAMES)
    for field, values in (("audio", [True, False, "no"]), ("video", [True, False, 1]),
                          ("bitrate", [0, 128000, -1, 1.5]), ("reason", ["bye", 3])):
        if rng.random() < 0.2:
            body[field] = rng.choice(values)
    return rng.choice([body, body, body, None, "text", []])


def check_invariants(m: vc.VideoCall) -> None:
    for name, handle in m.names.items():
        assert m.handles[handle].username == name
    for handle, state in m.handles.items():
        if state.username is not None:
            assert m.names[state.username] == handle
        if state.call is not None:
            call = state.call
            assert handle in (call.caller, call.callee)
            assert m.calls[call.call_id] is call
    for call in m.calls.values():
        for side in (call.caller, call.callee):
            assert side in m.handles and m.handles[side].call is call


def run(seed: int, steps: int = 400) -> None:
    rng = random.Random(seed)
    m = vc.VideoCall(max_pending_trickles=8)
    registry: dict[str, int] = {}
    handles = list(range(1, 6))
    for h in handles:
        m.attach(h)
    pending: list[vc.Effect] = []
    for step in range(steps):
        roll = rng.random()
        if roll < 0.55:
            h = rng.choice(handles)
            if h not in m.handles:
                m.attach(h)
            tx = f"t{step}"
            effects = m.message(h, random_body(rng), rng.choice([None, OFFER, ANSWER]), tx)
            answered = [e for e in effects if isinstance(e, vc.Event) and e.transaction == tx]
            deferred = [e for e in effects
                        if isinstance(e, (vc.Claim, vc.Lookup, vc.RelayCreate, vc.RelayAccept, vc.RelayRenegotiate))]
            assert len(answered) + len(deferred) >= 1, effects
            pending += effects
        elif roll < 0.65:
            pending += m.detach(rng.choice(handles))
        elif roll < 0.7:
            pending += m.pc_closed(rng.choice(handles))
        elif roll < 0.75:
            pending += m.trickle(rng.choice(handles), [{"candidate": "c"}] * rng.randint(0, 5), rng.random() < 0.3)
        elif roll < 0.8 and m.calls:
            call_id = rng.choice(list(m.calls))
            pending += m.leg_state(call_id, rng.choice(["caller", "callee"]), rng.random() < 0.5, "ICE failed")
        elif roll < 0.82 and m.calls:
            pending += m.relay_lost([rng.choice(list(m.calls))])
        # carry out some deferred work, in random order, with random outcomes
        rng.shuffle(pending)
        keep: list[vc.Effect] = []
        for effect in pending:
            if rng.random() < 0.3:
                keep.append(effect)
                continue
            if isinstance(effect, vc.Claim):
                ok = registry.setdefault(effect.name, effect.handle) == effect.handle
                keep += m.claimed(effect.handle, effect.name, ok, effect.transaction)
            elif isinstance(effect, vc.Release):
                if registry.get(effect.name) == effect.handle:
                    del registry[effect.name]
            elif isinstance(effect, vc.Lookup):
                keep += m.looked_up(effect.handle, effect.name, registry.get(effect.name), effect.transaction, effect.jsep)
            elif isinstance(effect, vc.RelayCreate):
                ok = rng.random() < 0.8
                keep += m.call_created(effect.call_id, "offer" if ok else None, None if ok else "bad")
            elif isinstance(effect, vc.RelayAccept):
                ok = rng.random() < 0.8
                keep += m.call_accepted(effect.call_id, "answer" if ok else None, None if ok else "bad")
            elif isinstance(effect, vc.RelayRenegotiate):
                ok = rng.random() < 0.8
                keep += m.renegotiated(effect.call_id, effect.leg, effect.sdp_type,
                                       "sdp" if ok else None, None if ok else "bad", effect.transaction)
        pending = keep
        check_invariants(m)


def test_random_request_sequences_keep_state_consistent() -> None:
    for seed in range(60):
        run(seed)
