"""The relay worker: calls of two aiortc legs each, media relayed without decoding.

- ``worker.py``: the IPC server (``run_worker``, ``python -m mediarelay.worker``); owns the calls.
- ``call.py``: a call's two legs and the SDP between them (relay answers the caller, offers the callee).
- ``negotiation.py``: the call's m-line pairs, and an answer carried over to the client that offered.
- ``renegotiation.py``: a live call's new offers mirrored to the other leg (and ICE restarts).
- ``leg.py``: one PeerConnection, its state (``leg.state``) and incoming media (``leg.media``).
- ``media_flow.py``: per m-line counters and "receiving?" (``leg.media``); the forwarder counts there too.
- ``sdp.py``: client SDP and candidates checked; mirroring and codec decisions (pure).
- ``ice.py``: Janus's ICE settings (enforce list, port range, 1:1 NAT, servers) for aioice.
- ``aiortc_hooks/``: the only package touching aiortc/aioice internals, version-checked; one module
  per concern, nothing changed at import (``prepare_relay_legs`` / ``prepare_relay_process``).
- ``media.py``: a call's media: both legs' fast paths linked once connected, ``set``.
- ``rtcp.py``: the relay's RTCP to each client (reports, NACK, PLI, REMB, BYE) and its answers to theirs.
- ``forwarder.py``: the hot path: a ``RecvStream`` per client m-line feeds a ``SendStream`` to the other client
  (SRTP at each leg's socket: unprotect -> rewrite -> protect -> sendto).
- ``outbox.py``: what the fast path sends, held to the end of the loop iteration and sent together
  (``aiortc_hooks.SrtpSendBatch``: one ``sendmmsg`` per leg and flush).
- ``routes.py``: what goes where, read from both legs' SDP (payload types, SSRCs, extension ids; pure).
- ``rewriter.py``: outgoing sequence numbers and timestamps by offset, across mute and new SSRCs (pure).
- ``rtp_header.py``: RTP header bytes: extensions rewritten between legs, RTX, keyframes (pure).
- ``feedback.py``: the relay's RTCP duties per hop: RR/SR, NACK, PLI, REMB cap (pure, time passed in).
- ``simulcast_sdp.py``: a caller's simulcast offer (rid or SSRC), read and accepted in the relay's SDP (pure).
- ``simulcast.py``: which substream and temporal layers of a simulcasting sender reach the receiver,
  numbering and VP8/VP9 picture ids kept continuous (pure; ``forwarder.py`` asks it per packet).
- ``layer_policy.py``: the automatic substream choice from the receiver's REMB, loss and ``bitrate`` (pure).
"""
