"""The servers the end-to-end suite runs against, and the client fixtures.

Every test here runs once per server kind (the ``server_kind`` parameter):

- ``videocall``: our ``videocall serve --port <free port> --workers 1`` on 127.0.0.1 with
  ``VIDEOCALL_ICE_ENFORCE_LIST=127.0.0.1`` (one instance for the session; a second one with
  ``VIDEOCALL_SESSION_TIMEOUT=2`` for the timeout tests). If it does not accept connections
  within 20 s the tests using it error at once with its stderr, they never hang.
  ``VIDEOCALL_SERVE_CMD`` (e.g. ``"python -m videocall"``) overrides how it is started.
- ``janus``: the real Janus 1.1.2 through /work/shared/janus/*.sh, only when
  ``VIDEOCALL_TEST_JANUS=1`` (skipped otherwise). Signalling tests use Janus on loopback
  (``run-janus.sh``); call tests use Janus in the ``vcjanus`` network namespace
  (``janus-in-netns.sh``, needs root) because Janus never offers loopback candidates, and the
  clients then offer 10.77.0.1 as their host candidate.

Markers: ``-m videocall`` / ``-m janus`` select one kind.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.register_assert_rewrite("tests.e2e.e2e_support")  # its asserts explain themselves
from tests.e2e.e2e_support import Clients, Server  # noqa: E402 - after the assert rewrite
from tests.support.compose import Fleet, running_fleet  # noqa: E402 - after the assert rewrite
from tests.support.janus_ws import offer_host_address  # noqa: E402 - after the assert rewrite
from tests.support.servers import free_port, videocall_command  # noqa: E402 - after the assert rewrite

JANUS_DIR = Path(os.environ.get("VIDEOCALL_JANUS_SCRIPTS", "/work/shared/janus"))
NETNS = "vcjanus"
NETNS_HOST_SIDE = "10.77.0.1"  # what clients offer as their host candidate
NETNS_JANUS_SIDE = "10.77.0.2"  # where Janus listens
STARTUP_TIMEOUT = 20.0
SHORT_SESSION_TIMEOUT = 2  # seconds, for the session-timeout tests


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "janus: runs against the real Janus (VIDEOCALL_TEST_JANUS=1)")
    config.addinivalue_line("markers", "videocall: runs against our `videocall serve`")


class ServerProcess:
    """A server subprocess: started in its own process group, logged to files, stopped after."""

    def __init__(self, name: str, cmd: list[str], *, host: str, port: int, logdir: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name, self.cmd, self.host, self.port = name, cmd, host, port
        self.stdout = logdir / f"{name}.stdout.log"
        self.stderr = logdir / f"{name}.stderr.log"
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        try:
            with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
                self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=err, env=self.env,
                                             cwd=self.cwd, start_new_session=True)
        except OSError as exc:
            pytest.fail(f"{self.name}: cannot run {shlex.join(self.cmd)}: {exc}", pytrace=False)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._fail(f"exited with status {self.proc.returncode} before accepting connections")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"did not accept connections on {self.host}:{self.port} within {timeout:g} s")
            time.sleep(0.1)

    def _fail(self, what: str) -> None:
        pytest.fail(f"{self.name} {what}.\ncommand: {shlex.join(self.cmd)}\n"
                    f"--- stderr ({self.stderr}) ---\n{self.tail(self.stderr)}\n"
                    f"--- stdout ({self.stdout}) ---\n{self.tail(self.stdout)}", pytrace=False)

    @staticmethod
    def tail(path: Path, lines: int = 60) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def stop(self) -> None:
        """SIGTERM to the process group we started, SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


#: Running server processes by URL, so a test can say so when its server died.
RUNNING: dict[str, ServerProcess] = {}
#: Where each of our servers writes its recordings (``recordings_dir``), by URL.
RECORDINGS: dict[str, Path] = {}


def alive(server: Server) -> Server:
    process = RUNNING.get(server.url)
    if process is not None and process.proc is not None and process.proc.poll() is not None:
        process._fail(f"died during the test session (status {process.proc.returncode})")
    return server


# --- our server ------------------------------------------------------------------------------

def start_videocall(tmp: Path, name: str, session_timeout: float | None,
                    extra_env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    env = {"VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_HOST": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if session_timeout is not None:
        env["VIDEOCALL_SESSION_TIMEOUT"] = str(session_timeout)
    env["VIDEOCALL_RECORDINGS_DIR"] = str(tmp / "recordings")
    # A closed socket's sessions go at once, as in the Janus these servers are compared with
    # (its default); test_e2e_reclaim.py starts its own server that keeps them.
    env["VIDEOCALL_RECLAIM_SESSION_TIMEOUT"] = "0"
    env.update(extra_env or {})
    process = ServerProcess(name, [*videocall_command(), "serve", "--port", str(port), "--workers", "1"],
                            host="127.0.0.1", port=port, logdir=tmp, env=env, cwd=REPO)
    process.start()
    url = f"ws://127.0.0.1:{port}/"
    RUNNING[url] = process
    RECORDINGS[url] = tmp / "recordings"
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="session")
def videocall_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`videocall serve` on a free port of 127.0.0.1, for the whole test session."""
    yield from start_videocall(tmp_path_factory.mktemp("videocall"), "videocall-serve", None)


@pytest.fixture(scope="session")
def videocall_timeout_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`videocall serve` whose sessions expire after SHORT_SESSION_TIMEOUT seconds."""
    yield from start_videocall(tmp_path_factory.mktemp("videocall-timeout"),
                               "videocall-serve-timeout", SHORT_SESSION_TIMEOUT)


#: ``ring_timeout`` of the server that lets calls ring only briefly.
SHORT_RING_TIMEOUT = 1.0


@pytest.fixture(scope="session")
def videocall_ring_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`videocall serve` whose unanswered calls end after SHORT_RING_TIMEOUT seconds."""
    yield from start_videocall(tmp_path_factory.mktemp("videocall-ring"), "videocall-serve-ring", None,
                               {"VIDEOCALL_RING_TIMEOUT": str(SHORT_RING_TIMEOUT)})


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """``docker-compose.yml``'s topology as local processes: two nodes on one Redis, two
    workers; a short registry lease, so a node that dies is noticed within seconds."""
    with running_fleet(tmp_path, FLEET_ENV) as running:
        yield running


#: The registry lease of the fleet fixture's nodes (seconds).
FLEET_LEASE = 3.0
#: The fleets' settings: that lease, and a dropped socket's sessions gone at once (as the Janus
#: the fleet is compared with; test_e2e_reclaim.py has the sessions that wait for a claim).
FLEET_ENV = {"VIDEOCALL_REGISTRY_LEASE": str(FLEET_LEASE), "VIDEOCALL_RECLAIM_SESSION_TIMEOUT": "0"}


# --- the real Janus --------------------------------------------------------------------------

def require_janus() -> None:
    if os.environ.get("VIDEOCALL_TEST_JANUS") != "1":
        pytest.skip("real Janus runs only with VIDEOCALL_TEST_JANUS=1")
    if not shutil.which("janus") and not Path("/usr/bin/janus").exists():
        pytest.fail("VIDEOCALL_TEST_JANUS=1 but Janus is not installed "
                    "(apt-get install -y janus janus-tools)", pytrace=False)


def start_janus(tmp: Path, name: str, *, netns: bool, session_timeout: int = 60) -> Iterator[Server]:
    port = free_port()
    host = NETNS_JANUS_SIDE if netns else "127.0.0.1"
    cmd = ([str(JANUS_DIR / "janus-in-netns.sh"), "run"] if netns
           else [str(JANUS_DIR / "run-janus.sh")]) + [str(port), str(tmp / "recordings")]
    # TMPDIR: the script's mktemp config folder lands in pytest's temp dir, not /tmp.
    env = {"JANUS_SESSION_TIMEOUT": str(session_timeout), "TMPDIR": str(tmp)}
    process = ServerProcess(name, cmd, host=host, port=port, logdir=tmp, env=env)
    process.start()
    url = f"ws://{host}:{port}/"
    RUNNING[url] = process
    try:
        yield Server("janus", url, NETNS_HOST_SIDE if netns else "127.0.0.1", session_timeout,
                     process.stderr)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def janus_netns() -> Iterator[str]:
    """The `vcjanus` network namespace (created here if missing, removed after if so)."""
    require_janus()
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("Janus call tests need root and iproute2 for the vcjanus network namespace")
    script = str(JANUS_DIR / "janus-in-netns.sh")
    existed = NETNS in subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout.split()
    if not existed:
        up = subprocess.run([script, "up"], check=False, capture_output=True, text=True)
        if up.returncode != 0:
            pytest.skip(f"cannot create the vcjanus network namespace: {up.stderr.strip()}")
    yield NETNS_HOST_SIDE
    if not existed:
        subprocess.run([script, "down"], check=False, capture_output=True)


@pytest.fixture(scope="session")
def janus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Real Janus on loopback, for signalling comparisons."""
    require_janus()
    yield from start_janus(tmp_path_factory.mktemp("janus"), "janus-loopback", netns=False)


@pytest.fixture(scope="session")
def janus_media_server(tmp_path_factory: pytest.TempPathFactory, janus_netns: str) -> Iterator[Server]:
    """Real Janus in the network namespace, for calls with media."""
    yield from start_janus(tmp_path_factory.mktemp("janus-media"), "janus-netns", netns=True)


@pytest.fixture(scope="session")
def janus_timeout_server(tmp_path_factory: pytest.TempPathFactory, janus_netns: str) -> Iterator[Server]:
    """Real Janus in the network namespace whose sessions expire after a few seconds."""
    yield from start_janus(tmp_path_factory.mktemp("janus-timeout"), "janus-netns-timeout",
                           netns=True, session_timeout=SHORT_SESSION_TIMEOUT)


# --- what the tests use ----------------------------------------------------------------------

@pytest.fixture(params=[pytest.param("janus", marks=pytest.mark.janus),
                        pytest.param("videocall", marks=pytest.mark.videocall)])
def server_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=[pytest.param("janus", marks=pytest.mark.janus),
                        pytest.param("videocall", marks=pytest.mark.videocall),
                        pytest.param("fleet", marks=pytest.mark.videocall)])
def media_kind(request: pytest.FixtureRequest) -> str:
    """Calls run against real Janus, our server, and our fleet (users alternating between two
    nodes of docker-compose.yml's topology, so every call crosses nodes)."""
    return request.param


@pytest.fixture(scope="session")
def fleet_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """``fleet``, once for the whole session (the e2e call tests share it)."""
    with running_fleet(tmp_path_factory.mktemp("fleet"), FLEET_ENV) as running:
        yield running


@pytest.fixture
def server(server_kind: str, request: pytest.FixtureRequest) -> Server:
    """The server for signalling-only tests."""
    if server_kind == "janus":
        return alive(request.getfixturevalue("janus_server"))
    return alive(Server("videocall", request.getfixturevalue("videocall_url"), "127.0.0.1", 60))


@pytest.fixture
def media_server(media_kind: str, request: pytest.FixtureRequest) -> Server:
    """The server for tests that set up calls with media."""
    if media_kind == "janus":
        return alive(request.getfixturevalue("janus_media_server"))
    if media_kind == "fleet":
        fleet: Fleet = request.getfixturevalue("fleet_session")
        urls = (fleet.url("signal1"), fleet.url("signal2"))
        for url in urls:
            RECORDINGS[url] = fleet.logs / "recordings"  # where the fleet's workers write
        return Server("videocall", urls[0], "127.0.0.1", 60, urls=urls)
    return alive(Server("videocall", request.getfixturevalue("videocall_url"), "127.0.0.1", 60))


@pytest.fixture
def timeout_server(server_kind: str, request: pytest.FixtureRequest) -> Server:
    """A server whose sessions expire after SHORT_SESSION_TIMEOUT seconds (calls possible)."""
    if server_kind == "janus":
        return alive(request.getfixturevalue("janus_timeout_server"))
    return alive(Server("videocall", request.getfixturevalue("videocall_timeout_url"), "127.0.0.1",
                        SHORT_SESSION_TIMEOUT))


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Clients]:
    """Clients of the signalling server; everything they open is closed after the test."""
    async with Clients(server) as clients:
        yield clients


@contextlib.asynccontextmanager
async def clients_of(url: str) -> AsyncIterator[Clients]:
    """Clients of our server at ``url`` (a dedicated one: other settings), offering loopback;
    everything they open is closed after."""
    server = alive(Server("videocall", url, "127.0.0.1", 60))
    with offer_host_address(server.ice_host):
        async with Clients(server) as clients:
            yield clients


@pytest.fixture
async def calls(media_server: Server) -> AsyncIterator[Clients]:
    """Clients of the media server, their PeerConnections offering ``ice_host``."""
    with offer_host_address(media_server.ice_host):
        async with Clients(media_server) as clients:
            yield clients


@pytest.fixture
async def expiring(timeout_server: Server) -> AsyncIterator[Clients]:
    """Clients of the short-session-timeout server."""
    with offer_host_address(timeout_server.ice_host):
        async with Clients(timeout_server) as clients:
            yield clients
