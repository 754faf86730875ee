"""``aiortc_hooks.FastSrtp`` (libsrtp called straight from cffi) gives pylibsrtp's results and errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pylibsrtp import Error, Policy, Session

from mediarelay.aiortc_hooks import FastSrtp

KEY = bytes(range(30))


def _sessions(kind: int) -> tuple[Session, Session]:
    return Session(Policy(key=KEY, ssrc_type=kind)), Session(Policy(key=KEY, ssrc_type=kind))


def _rtp(seq: int, size: int) -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + (1000).to_bytes(4, "big") + (1234).to_bytes(4, "big") \
        + os.urandom(size)


def test_protect_and_unprotect_as_pylibsrtp() -> None:
    tx, tx_lean = _sessions(Policy.SSRC_ANY_OUTBOUND)
    rx, rx_lean = _sessions(Policy.SSRC_ANY_INBOUND)
    fast_tx, fast_rx = FastSrtp(tx_lean), FastSrtp(rx_lean)
    for seq, size in enumerate([0, 1, 160, 1100, 1200, 3, 900]):
        packet = _rtp(seq, size)
        protected = tx.protect(packet)
        assert fast_tx.protect(packet) == protected
        assert fast_rx.unprotect(protected) == rx.unprotect(protected) == packet
    rtcp = bytes([0x80, 200, 0, 6]) + (1234).to_bytes(4, "big") + bytes(20)
    protected = tx.protect_rtcp(rtcp)
    assert fast_tx.protect_rtcp(rtcp) == protected
    assert fast_rx.unprotect_rtcp(protected) == rtcp


def test_errors_as_pylibsrtp() -> None:
    tx, _ = _sessions(Policy.SSRC_ANY_OUTBOUND)
    _, rx = _sessions(Policy.SSRC_ANY_INBOUND)
    fast_rx = FastSrtp(rx)
    protected = tx.protect(_rtp(1, 100))
    fast_rx.unprotect(protected)
    with pytest.raises(Error, match="replay"):
        fast_rx.unprotect(protected)
    with pytest.raises(Error):
        fast_rx.unprotect(protected[:-4] + bytes(4))  # authentication fails
    with pytest.raises(ValueError, match="too long"):
        FastSrtp(tx).protect(bytes(1400))


def test_a_function_outlives_its_fast_srtp_and_session() -> None:
    """A stream may hold ``protect`` after its FastSrtp and the session object are gone: the
    function keeps the libsrtp session alive (else libsrtp reads freed memory: a crash, so run
    in a child process that must exit cleanly)."""
    code = """
import gc
from pylibsrtp import Policy, Session
from mediarelay.aiortc_hooks import FastSrtp
key = bytes(range(30))
protect = FastSrtp(Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))).protect
gc.collect()
junk = [Session(Policy(key=bytes(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)) for _ in range(200)]
packet = bytes([0x80, 96, 0, 1]) + bytes(8) + bytes(100)
reference = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND)).protect(packet)
assert protect(packet) == reference, "protected with a freed session"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
