"""The ``videocall`` command: ``serve``, ``signaling``, ``relay``, ``loadtest``, ``recordings``, ``tokens``.

``serve`` is the embedded default a newcomer runs: one signalling process plus relay
worker subprocesses it starts, watches and restarts, an in-memory registry. A worker that
dies is restarted; one that hangs (misses its heartbeat) is killed and restarted; and a
worker whose ``serve`` is gone (even SIGKILLed) exits too, removing its socket and, the last
one out, the temporary socket folder. ``signaling``
and ``relay`` run the two halves on their own, for several nodes or remote workers.

``serve`` imports what its workers run before it reads its settings and forks its workers' fork
server from itself (``videocall/worker_forks.py``), so the signalling process and every worker
share one copy of the interpreter's modules; ``signaling`` never imports aiortc.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.logs import setup_logging
from shared.relay_auth import new_secret
from shared.settings import Settings, load
from videocall import worker_forks
from videocall.supervisor import WorkerSupervisor
from videocall.worker_forks import Prefork

if TYPE_CHECKING:
    from signaling.tls import TlsSource

log = logging.getLogger("videocall")

EPILOG = """\
Settings come from (lowest first): defaults, --config FILE (TOML or JSON, keys as the
setting names below), VIDEOCALL_<NAME> environment variables (e.g.
VIDEOCALL_ICE_ENFORCE_LIST=127.0.0.1), then these flags.

examples:
  videocall serve                              # ws://127.0.0.1:8188/, one worker per core
  videocall serve --host 0.0.0.0 --workers 2 --rtp-port-range 20000-40000
  VIDEOCALL_RELAY_SECRET=... videocall relay --listen tcp:0.0.0.0:7001
                                               # a worker for a remote signalling node
  videocall signaling --worker tcp:10.0.0.5:7001 --worker tcp:10.0.0.6:7001
  videocall serve --tls-self-signed --host 0.0.0.0
                                               # https:// and wss:// for phones on the LAN
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    parser.add_argument("--log-format", choices=["text", "json"], help="json: one JSON object per line (default text)")
    ice = parser.add_argument_group("ICE (Janus's names)")
    ice.add_argument("--ice-enforce-list", metavar="ADDRS",
                     help="addresses/interfaces offered as host candidates, comma-separated (e.g. 127.0.0.1)")
    ice.add_argument("--nat-1-1-mapping", metavar="ADDR", help="public address advertised instead of the host address")
    ice.add_argument("--rtp-port-range", metavar="LOW-HIGH", help="UDP ports for media, e.g. 20000-40000")
    ice.add_argument("--ice-servers", metavar="URLS", help="STUN/TURN URLs, comma-separated (default: none)")
    parser.add_argument("--recordings-dir", metavar="DIR",
                        help="folder recordings are written in, and never outside of (default ./recordings)")


def _signaling_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="WebSocket/HTTP port (default 8188, as Janus)")
    parser.add_argument("--session-timeout", type=float, metavar="S", help="seconds before an idle session expires (default 60)")
    parser.add_argument("--base-path", metavar="PATH", help="path of the Janus HTTP transport (default /janus)")
    parser.add_argument("--reclaim-session-timeout", type=float, metavar="S",
                        help="seconds the sessions of a dropped WebSocket wait for a claim (default 30; 0 = destroyed at once)")
    parser.add_argument("--redis-url", metavar="URL",
                        help="Redis shared by the nodes of a fleet, e.g. redis://host:6379/0 (default: none, names stay local)")
    parser.add_argument("--redis-key-prefix", metavar="PREFIX", help="start of every Redis key (default videocall:)")
    parser.add_argument("--drain-timeout", type=float, metavar="S",
                        help="after SIGTERM, seconds to wait for calls to end before exiting (default 60; 0 = at once)")
    admin = parser.add_argument_group("Admin API (on only when admin_secret is set, by VIDEOCALL_ADMIN_SECRET or --config)")
    admin.add_argument("--admin-host", metavar="ADDR", help="address the Admin API binds (default 127.0.0.1)")
    admin.add_argument("--admin-port", type=int, metavar="PORT", help="Admin API port, HTTP and WebSocket (default 7088)")
    admin.add_argument("--admin-base-path", metavar="PATH", help="path of the Admin API's HTTP endpoints (default /admin)")
    tls = parser.add_argument_group("TLS: https:// and wss:// on the same port (reloaded on SIGHUP)")
    tls.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain), with --tls-key")
    tls.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    tls.add_argument("--tls-self-signed", action="store_true", default=None,
                     help="make (once, then reuse) a certificate for this host's names and addresses; "
                     "its SHA-256 fingerprint is logged")
    tls.add_argument("--tls-host-names", metavar="NAMES",
                     help="names/addresses of the self-signed certificate, comma-separated "
                     "(default: host name, LAN addresses, localhost)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videocall",
        description="A 1:1 WebRTC calling server speaking the Janus VideoCall plugin API; "
        "media is relayed through worker processes without transcoding.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="signalling + relay workers in one process tree (the default set-up)",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _signaling_flags(serve)
    serve.add_argument("--workers", type=int, metavar="N", help="relay worker processes (default: one per core)")
    _common(serve)

    signaling = sub.add_parser("signaling", help="signalling only, using relay workers started elsewhere",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _signaling_flags(signaling)
    signaling.add_argument("--worker", action="append", dest="worker_addresses", metavar="ADDR",
                           help="a relay worker: unix:/path.sock or tcp:host:port (repeatable)")
    _common(signaling)

    relay = sub.add_parser("relay", help="one relay worker process",
                           epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    relay.add_argument("--listen", metavar="ADDR", help="unix:/path.sock or tcp:host:port (required)")
    relay.add_argument("--worker-id", default="", help="name used in logs and stats")
    # Set by serve for the workers it starts: exit with serve, and remove its temporary folder.
    relay.add_argument("--supervisor-pid", type=int, default=0, help=argparse.SUPPRESS)
    relay.add_argument("--remove-empty-ipc-dir", action="store_true", help=argparse.SUPPRESS)
    # serve's fork server (videocall/worker_forks.py): forks workers on requests read from this fd.
    relay.add_argument("--fork-server", type=int, metavar="FD", help=argparse.SUPPRESS)
    _common(relay)

    # The load tester has its own parser (loadtest/cli.py), imported only when it runs: every
    # argument after "loadtest" is passed on as is (prefix_chars keeps argparse off them).
    loadtest = sub.add_parser("loadtest", help="load any Janus VideoCall server with calls and media "
                              "(videocall loadtest --help)", add_help=False, prefix_chars="\0")
    loadtest.add_argument("loadtest_args", nargs=argparse.REMAINDER)

    # The same for the recordings tool (videocall/recordings.py): no server is started.
    recordings = sub.add_parser("recordings", help="list the recordings folder; convert .mjr files to "
                                ".webm/.mp4/.opus/.srt (videocall recordings --help)", add_help=False, prefix_chars="\0")
    recordings.add_argument("recordings_args", nargs=argparse.REMAINDER)

    # And for the stored tokens of token_auth (videocall/tokens.py): a file tool too.
    tokens = sub.add_parser("tokens", help="add, list or remove the stored tokens of token_auth "
                            "(videocall tokens --help)", add_help=False, prefix_chars="\0")
    tokens.add_argument("tokens_args", nargs=argparse.REMAINDER)
    return parser


_SETTING_FLAGS = (
    "host", "port", "session_timeout", "workers", "worker_addresses", "log_level",
    "ice_enforce_list", "nat_1_1_mapping", "rtp_port_range", "ice_servers", "recordings_dir",
    "redis_url", "redis_key_prefix",
    "log_format", "drain_timeout", "reclaim_session_timeout", "base_path",
    "admin_host", "admin_port", "admin_base_path",
    "tls_cert", "tls_key", "tls_self_signed", "tls_host_names",
)


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in _SETTING_FLAGS}
    return load(args.config, **flags)


# --- serve: the process tree (its workers: videocall/supervisor.py) ------------------------


def _prepare_serve() -> Prefork | None:
    """What ``serve`` does first, before its settings are read (so that no secret is in the
    memory it shares): import what the signalling node and a relay worker run, prepare the
    relay side (``prepare_process``), freeze it all, and fork the workers' fork server from
    this process (``worker_forks.prefork``). None where forking is not available."""
    if not worker_forks.available():
        return None
    import uvloop  # noqa: F401 - the loop of signalling and of every worker

    import signaling.server  # the signalling node
    import signaling.tls  # noqa: F401 - TLS, when configured
    from mediarelay.worker import prepare_process

    prepare_process()
    return worker_forks.prefork(_forked_fork_server)


def _forked_fork_server(control_fd: int, init: dict[str, Any]) -> None:
    """The fork server ``_prepare_serve`` forked, once serve sent its first line: the settings'
    environment (as an exec'd fork server gets it), serve's pid, whether the socket folder is
    serve's own."""
    env, supervisor_pid = init.get("env"), init.get("supervisor_pid")
    if not isinstance(env, dict) or not isinstance(supervisor_pid, int):
        raise ValueError(f"relay fork server: unreadable first line (keys {sorted(init)})")
    os.environ.update({str(name): str(value) for name, value in env.items()})
    settings = load(None)
    setup_logging(settings.log_level, settings.log_format)
    _fork_server(settings, control_fd, supervisor_pid, bool(init.get("remove_empty_dir")))


async def _serve(settings: Settings, tls: TlsSource | None = None, forked: Prefork | None = None) -> None:
    from signaling.server import run as run_signaling

    count = settings.workers or os.cpu_count() or 1
    if not settings.relay_secret.get_secret_value():
        # Even serve's own workers, on a socket only this user can open, want a proof: one
        # made up for this run, given to them in their environment.
        settings = settings.model_copy(update={"relay_secret": new_secret()})
    with tempfile.TemporaryDirectory(prefix="videocall-ipc-", ignore_cleanup_errors=True) as tmp:
        ipc_dir = Path(settings.ipc_dir or tmp)
        ipc_dir.mkdir(parents=True, exist_ok=True)
        supervisor = WorkerSupervisor(settings, count, ipc_dir, temporary_dir=not settings.ipc_dir, forked=forked)
        settings = settings.model_copy(update={"worker_addresses": supervisor.addresses})
        await supervisor.start()
        try:
            drain = asyncio.Event()
            _freeze_start_up()
            await _until_signalled(run_signaling(settings, drain=drain, tls=tls), drain, tls)
        finally:
            await supervisor.stop()


def _freeze_start_up() -> None:
    """Signalling's start-up objects (modules, classes: ~40,000) out of the cyclic garbage
    collector's walks (``gc.freeze``, as the relay workers do): the collection the node makes
    after connections end (``shared/heap.py``) and Python's own full collections then look
    only at what it made since, not ~12 ms of start-up objects each time."""
    gc.collect()
    gc.freeze()


async def _until_signalled(coro: Any, drain: asyncio.Event | None = None, tls: TlsSource | None = None) -> None:
    """Run ``coro`` until it ends or a signal stops it, then cancel it cleanly.

    SIGINT stops at once. SIGTERM does too, unless ``drain`` is given: then the first SIGTERM
    sets it (the signalling node drains and ``coro`` ends by itself when its calls have) and a
    second one stops at once. With ``tls``, SIGHUP reloads the certificate (connections stay).
    """
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    if tls is not None:
        loop.add_signal_handler(signal.SIGHUP, tls.reload)

    def on_sigterm() -> None:
        if drain is None or drain.is_set():
            task.cancel()
        else:
            drain.set()

    loop.add_signal_handler(signal.SIGINT, task.cancel)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await task
    except asyncio.CancelledError:
        log.info("stopping")


async def _signaling(settings: Settings, tls: TlsSource | None = None) -> None:
    from signaling.server import run as run_signaling

    if not settings.worker_addresses:
        log.warning("no relay worker configured (--worker): calls will be refused")
    drain = asyncio.Event()
    _freeze_start_up()
    await _until_signalled(run_signaling(settings, drain=drain, tls=tls), drain, tls)


def _run(coro: Any) -> None:
    """Signalling on uvloop when it is there: its loop and socket writes are C (each call is
    about 30 WebSocket messages and 10 IPC frames through the loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
    else:
        uvloop.run(coro)


#: ``prctl`` option: the signal this process gets when its parent exits (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


def _exit_with(supervisor_pid: int) -> bool:
    """Have SIGHUP sent to this process when its parent (serve) exits, however it exits;
    False if it is gone already. Linux only; elsewhere a worker outlives a killed serve.

    SIGHUP, not SIGTERM: serve's own orderly stop sends SIGTERM, and only a worker whose serve
    died must clean up after it (the kernel may send the signal while the dying parent's other
    threads still run, so ``getppid`` cannot tell the two apart)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGHUP, 0, 0, 0)
    return os.getppid() == supervisor_pid  # checked after prctl: no gap for the parent to die in


async def _relay_until_signalled(coro: Any) -> bool:
    """``_until_signalled`` for a worker started by serve: also stops on SIGHUP (serve died);
    returns whether that is why it stopped."""
    task = asyncio.ensure_future(coro)
    parent_died = False

    def on_sighup() -> None:
        nonlocal parent_died
        parent_died = True
        task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
    await _until_signalled(task)
    return parent_died


def _relay(settings: Settings, listen: str, worker_id: str, supervisor_pid: int = 0,
           remove_empty_dir: bool = False) -> None:
    from mediarelay.worker import prepare_process

    if supervisor_pid and not _exit_with(supervisor_pid):
        log.warning("relay worker %s: serve (pid %d) is gone; not starting", worker_id or "-", supervisor_pid)
        return
    prepare_process()
    _run_relay(settings, listen, worker_id, supervisor_pid, remove_empty_dir)


def _fork_server(settings: Settings, control_fd: int, supervisor_pid: int, remove_empty_dir: bool) -> None:
    """``videocall relay --fork-server FD``: serve's fork server (videocall/worker_forks.py).
    Everything a worker runs is imported here first, then frozen (``prepare_process``)."""
    import uvloop  # noqa: F401 - imported once here, for every worker

    from mediarelay.worker import prepare_process

    if not _exit_with(supervisor_pid):
        return
    prepare_process()

    def run(listen: str, worker_id: str) -> int:
        if not _exit_with(supervisor_pid):  # now serve's child: exit with it
            log.warning("relay worker %s: serve (pid %d) is gone; not starting", worker_id, supervisor_pid)
            return 1
        _run_relay(settings, listen, worker_id, supervisor_pid, remove_empty_dir)
        return 0

    worker_forks.serve_forks(control_fd, supervisor_pid, run)


def _run_relay(settings: Settings, listen: str, worker_id: str, supervisor_pid: int, remove_empty_dir: bool) -> None:
    """A prepared relay process (``prepare_process``) serving until a signal, or serve's end."""
    from mediarelay.worker import run_worker
    from shared.ipc import parse_address

    work = _relay_until_signalled(run_worker(settings, listen, worker_id=worker_id))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        parent_died = asyncio.run(work)
    else:
        parent_died = uvloop.run(work)
    kind, where = parse_address(listen)
    if parent_died and remove_empty_dir and kind == "unix":
        # serve was killed and cannot remove its temporary folder: the last worker out does
        # (each removes its socket first; rmdir fails, harmlessly, while another's is there).
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(str(where)))
        log.info("relay worker %s: serve (pid %d) died; stopped with it", worker_id or "-", supervisor_pid)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "loadtest":  # a client: no server settings, and aiortc only in its load processes
        from loadtest.cli import main as loadtest_main

        return loadtest_main(args.loadtest_args)
    if args.command == "recordings":  # a file tool: reads settings only for recordings_dir
        from videocall.recordings import main as recordings_main

        return recordings_main(args.recordings_args)
    if args.command == "tokens":  # edits the token_store file; no server is started
        from videocall.tokens import main as tokens_main

        return tokens_main(args.tokens_args)
    forked = _prepare_serve() if args.command == "serve" else None
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        parser.error(f"invalid settings: {problems}")
    except (ValueError, OSError) as exc:
        parser.error(f"invalid settings: {exc}")
    if args.command == "relay" and args.fork_server is None:
        from shared.ipc import unguarded_listen

        if not args.listen:
            parser.error("relay: --listen is required")

        try:
            refusal = unguarded_listen(args.listen, settings.relay_secret)
        except ValueError as exc:
            parser.error(str(exc))
        if refusal is not None:  # before anything binds
            print(f"videocall relay: {refusal}", file=sys.stderr)
            return 2
    setup_logging(settings.log_level, settings.log_format)
    tls: TlsSource | None = None
    if args.command in ("serve", "signaling"):
        from signaling.tls import TlsError, TlsSource

        try:  # before anything starts: a bad certificate or key refuses the start in one line
            tls = TlsSource.from_settings(settings)
        except TlsError as exc:
            print(f"videocall {args.command}: cannot serve TLS: {exc}", file=sys.stderr)
            return 2
    try:
        if args.command == "serve":
            _run(_serve(settings, tls, forked))
        elif args.command == "signaling":
            _run(_signaling(settings, tls))
        elif args.fork_server is not None:
            _fork_server(settings, args.fork_server, args.supervisor_pid, args.remove_empty_ipc_dir)
        else:
            _relay(settings, args.listen, args.worker_id, args.supervisor_pid, args.remove_empty_ipc_dir)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
