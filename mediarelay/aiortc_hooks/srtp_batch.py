"""RTP protected straight into a ``sendmmsg`` array: one leg's outgoing media, one system call
per loop iteration.

``SrtpSendBatch.send(packet)`` protects with the leg's libsrtp session (as ``FastSrtp``, the
same session aiortc made) *in a slot of a preallocated ``struct mmsghdr`` array*, and holds it;
the ``Outbox`` (``mediarelay.outbox``) calls ``flush`` once per loop iteration, which sends
every held slot with one ``sendmmsg`` on the transport's socket. Measured against protect ->
bytes -> the transport's ``sendto`` for each packet: no protected ``bytes`` object, no ``sendto``
per packet (5.5 against 6.6 us a packet, kernel included, in bursts of 4 on loopback).

Reaches: pylibsrtp's session pointer (``Session._srtp``, as ``FastSrtp``), the transport's
file descriptor (``get_extra_info("socket")``, public) written to behind the transport's
back, and libc's ``sendmmsg`` by cffi (ABI mode, the struct layout checked against Linux's).
``make`` returns None where any of that is missing; the caller then sends as before.
What a full socket refuses (EAGAIN) goes to the transport's ``sendto``, which queues it; while
that queue is not empty, later flushes go the same way (behind it, never ahead).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
from collections.abc import Callable
from typing import Any

import cffi  # type: ignore[import-untyped]
from pylibsrtp import SRTP_MAX_TRAILER_LEN
from pylibsrtp import Error as SrtpError
from pylibsrtp._binding import ffi as _srtp_ffi  # type: ignore[import-not-found]
from pylibsrtp._binding import lib as _srtp_lib

from mediarelay.aiortc_hooks.srtp import _SRTP_ERRORS, FastSrtp

#: Packets held per socket; a full batch is sent at once (bursts per socket are a frame's packets).
BATCH = 16
SLOT = 1500  # as FastSrtp's buffer

_ffi = cffi.FFI()
_ffi.cdef("""
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr { void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
                void *msg_control; size_t msg_controllen; int msg_flags; };
struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
""")


def _load_sendmmsg() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    # The layout cffi computes must be the kernel's (64-bit Linux, glibc or musl: 56 and 64 bytes).
    if _ffi.sizeof("struct msghdr") != 56 or _ffi.sizeof("struct mmsghdr") != 64:
        return None  # pragma: no cover - a 32-bit platform
    try:
        return _ffi.dlopen(None).sendmmsg
    except (OSError, AttributeError):  # pragma: no cover - a libc without sendmmsg
        return None


_sendmmsg = _load_sendmmsg()


def sockaddr(address: tuple[Any, ...]) -> bytes:
    """The ``struct sockaddr_in``/``sockaddr_in6`` of an (IP, port[, flowinfo, scope id]) tuple."""
    host, port = address[0], address[1]
    if ":" in host:
        flowinfo, scope = (address[2], address[3]) if len(address) >= 4 else (0, 0)
        return (socket.AF_INET6.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + flowinfo.to_bytes(4, "big")
                + socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0]) + scope.to_bytes(4, sys.byteorder))
    return socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big") + socket.inet_aton(host) + bytes(8)


class SrtpSendBatch:
    """A leg's outgoing RTP: protected into slots, sent by one ``sendmmsg`` per flush.

    ``send`` raises as ``FastSrtp.protect`` does (``pylibsrtp.Error``; ValueError for a packet
    too long); ``on_failed(n)`` hears of packets protected but not sent (the transport closed,
    or the kernel refused them). ``hold(batch)`` is the ``Outbox``'s: flush at the end of this
    loop iteration."""

    __slots__ = ("_transport", "_fd", "_remote", "_hold", "_on_failed", "_srtp", "_session", "_msgs", "_iovs",
                 "_data", "_buffer", "_slots", "_lengths", "_iov_list", "_name", "_count", "_limit")

    def __init__(self, srtp: FastSrtp, transport: asyncio.DatagramTransport, remote: tuple[Any, ...],
                 hold: Callable[[Any], None], on_failed: Callable[[int], None]) -> None:
        session = srtp.session
        sock = transport.get_extra_info("socket")
        pointer = getattr(session, "_srtp", None)
        if _sendmmsg is None or sock is None or pointer is None:
            raise OSError(errno.ENOSYS, "no sendmmsg, socket or libsrtp session here")
        if "%" in str(remote[0]):  # a scoped IPv6 address: the transport's sendto resolves the scope
            raise OSError(errno.EAFNOSUPPORT, "scoped IPv6 address")
        self._transport = transport
        self._fd = sock.fileno()
        self._remote = remote
        self._hold = hold
        self._on_failed = on_failed
        self._session = srtp  # keeps the libsrtp session alive
        self._srtp = pointer[0]
        self._limit = SLOT - SRTP_MAX_TRAILER_LEN
        self._data = _srtp_ffi.new("char[]", BATCH * SLOT)
        self._buffer = _srtp_ffi.buffer(self._data)
        self._slots = [self._data + i * SLOT for i in range(BATCH)]
        self._lengths = [_srtp_ffi.new("int *") for _ in range(BATCH)]
        raw = sockaddr(remote)
        self._name = _ffi.new("char[]", raw)
        self._msgs = _ffi.new("struct mmsghdr[]", BATCH)
        self._iovs = _ffi.new("struct iovec[]", BATCH)
        self._iov_list = [self._iovs + i for i in range(BATCH)]
        for i in range(BATCH):
            self._iovs[i].iov_base = _ffi.cast("void *", int(_srtp_ffi.cast("uintptr_t", self._slots[i])))
            header = self._msgs[i].msg_hdr
            header.msg_iov = self._iovs + i
            header.msg_iovlen = 1
            header.msg_name = self._name
            header.msg_namelen = len(raw)
        self._count = 0

    def send(self, packet: bytes | bytearray) -> None:
        """Protect plain RTP ``packet`` and hold it until the flush."""
        i = self._count
        if i == BATCH:  # a burst longer than the batch: send what is held first
            self.flush()
            i = 0
        size = len(packet)
        if size > self._limit:
            raise ValueError("packet is too long")
        start = i * SLOT
        self._buffer[start:start + size] = packet
        length = self._lengths[i]
        length[0] = size
        status = _srtp_lib.srtp_protect(self._srtp, self._slots[i], length)
        if status:
            raise SrtpError(_SRTP_ERRORS[status] if status < len(_SRTP_ERRORS) else f"libsrtp error {status}")
        self._iov_list[i].iov_len = length[0]
        self._count = i + 1
        if i == 0:
            self._hold(self)

    def flush(self) -> None:
        """Send what is held (nothing held: nothing to do)."""
        count, self._count = self._count, 0
        if not count:
            return
        if self._transport.is_closing():  # its file descriptor may be closed, even reused
            self._on_failed(count)
            return
        queued = getattr(self._transport, "get_write_buffer_size", None)  # asyncio's and uvloop's have it
        if queued is not None and queued():  # it still queues earlier packets: behind them
            for i in range(count):
                self._resend(i)
            return
        sent = 0
        while sent < count:
            done = _sendmmsg(self._fd, self._msgs + sent, count - sent, 0)
            if done > 0:
                sent += done
                continue
            code = _ffi.errno
            if code == errno.EINTR:
                continue
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):  # full: the transport queues the rest
                for i in range(sent, count):
                    self._resend(i)
                return
            self._on_failed(1)  # this one is refused (an unreachable address...): try the next ones
            sent += 1

    def _resend(self, i: int) -> None:
        start = i * SLOT
        try:
            self._transport.sendto(self._buffer[start:start + self._lengths[i][0]], self._remote)
        except (ValueError, TypeError, OSError, RuntimeError):
            self._on_failed(1)


def srtp_send_batch(srtp: FastSrtp, transport: asyncio.DatagramTransport, remote: tuple[Any, ...],
                    hold: Callable[[Any], None], on_failed: Callable[[int], None]) -> SrtpSendBatch | None:
    """A ``SrtpSendBatch``, or None where it cannot be had (no sendmmsg, no socket, another pylibsrtp)."""
    try:
        return SrtpSendBatch(srtp, transport, remote, hold, on_failed)
    except OSError:
        return None
