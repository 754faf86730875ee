"""``videocall loadtest``: calls with media against ``videocall serve``, and the ways a server
fails (nothing listening, calls refused, killed mid-run), each a clear report and exit status 1,
never a traceback. Plus the load tester's pure parts: RTP statistics, percentiles, options.

Real processes: the load tester runs as ``python -m videocall loadtest`` exactly as a user
runs it, against a server started here on a free loopback port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.cli import build_parser
from loadtest.report import normalise_reason, percentiles
from loadtest.rtp_stats import StreamStats
from tests.support.servers import free_port

# Small clips and short calls: a few seconds of a 2-core machine shared with others.
SMALL = ["--resolution", "320x240", "--bitrate", "300k", "--quiet"]


class Server:
    """A ``videocall`` server subprocess in its own process group, logging to a file."""

    def __init__(self, tmp: Path, *args: str, ready: bytes) -> None:
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.log_path = tmp / f"server-{self.port}.log"
        env = {**os.environ, "VIDEOCALL_ICE_ENFORCE_LIST": "127.0.0.1", "VIDEOCALL_LOG_LEVEL": "INFO"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "videocall", *args, "--port", str(self.port)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while ready not in self.log_path.read_bytes() or not self._listening():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"server did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clip-cache")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("serve"), "serve", "--workers", "1", ready=b"connected to relay worker")
    yield server
    server.kill(signal.SIGTERM)


def loadtest(url: str, *args: str, cache: Path, json_path: Path | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    extra = ["--json", str(json_path)] if json_path else []
    return subprocess.run([sys.executable, "-m", "videocall", "loadtest", url, *args, *extra], check=False,
                          env={**os.environ, "VIDEOCALL_CACHE_DIR": str(cache)},
                          capture_output=True, text=True, timeout=timeout)


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr


# --- against our server ---------------------------------------------------------------------------


def test_calls_succeed_with_media_flowing_both_ways(serve: Server, cache_dir: Path, tmp_path: Path) -> None:
    result = tmp_path / "report.json"
    out = loadtest(serve.url, "--calls", "3", "--duration", "3", "--rate", "5", "--verify", *SMALL,
                   cache=cache_dir, json_path=result)
    no_traceback(out)
    report = json.loads(result.read_text())
    assert report["calls"] == {"requested": 3, "succeeded": 3, "failed": 0, "failures": {}}, out.stdout
    assert out.returncode == 0, out.stdout + out.stderr
    assert report["setup_ms"]["webrtcup"]["n"] == 3 and report["setup_ms"]["first_media"]["n"] == 3
    for direction in ("caller->callee", "callee->caller"):
        for kind in ("audio", "video"):
            media = report["media"][direction][kind]
            assert media["calls"] == 3 and media["received"] > 0, (direction, kind, media)
            assert media["delivery"] >= 0.95, (direction, kind, media)
            assert media["malformed"] == 0 and media["bitrate_kbps_mean"] > 0
    # one call per load process is decoded by aiortc: the relayed media is intact video and audio
    verify = report["verify"]
    assert verify["video_sizes"] == [[320, 240]], verify
    assert all(verify["decoded_frames"][f"{side} {kind}"] > 0 for side in ("caller", "callee")
               for kind in ("audio", "video")), verify
    assert "3 of 3 calls succeeded" in out.stdout


def test_signalling_only_reports_round_trips_and_idle_session_memory(serve: Server, cache_dir: Path,
                                                                      tmp_path: Path) -> None:
    result = tmp_path / "signalling.json"
    out = loadtest(serve.url, "--signalling-only", "--clients", "8", "--duration", "1", "--quiet",
                   "--server-pid", str(serve.proc.pid), cache=cache_dir, json_path=result)
    no_traceback(out)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(result.read_text())
    assert report["errors"] == {} and report["idle_sessions"] == 8
    assert report["round_trips"] > 0 and report["round_trips_per_second"] > 0
    assert report["latency_ms"]["list"]["n"] == report["cycles"] > 0
    assert report["server"]["kb_per_idle_session"] is not None
    assert "round trips/s" in out.stdout


# --- failing servers ---------------------------------------------------------------------------------


def test_nothing_listening_is_one_clear_reason_and_exit_1(cache_dir: Path, tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/"
    result = tmp_path / "report.json"
    out = loadtest(url, "--calls", "2", *SMALL, cache=cache_dir, json_path=result)
    no_traceback(out)
    assert out.returncode == 1
    assert f"cannot connect to {url}: connection refused" in out.stdout
    report = json.loads(result.read_text())
    assert report["calls"]["failed"] == 2 and "connection refused" in report["error"]


def test_refused_calls_are_reported_with_the_servers_reason(tmp_path: Path, cache_dir: Path) -> None:
    server = Server(tmp_path, "signaling", ready=b"videocall signalling on")  # no relay worker
    try:
        result = tmp_path / "report.json"
        out = loadtest(server.url, "--calls", "2", "--duration", "2", *SMALL, cache=cache_dir, json_path=result)
    finally:
        server.kill(signal.SIGTERM)
    no_traceback(out)
    assert out.returncode == 1
    failures = json.loads(result.read_text())["calls"]["failures"]
    assert list(failures.values()) == [2] and next(iter(failures)).startswith("call: error 499"), failures


def test_server_killed_mid_run_fails_the_calls_with_a_clear_reason(tmp_path: Path, cache_dir: Path) -> None:
    server = Server(tmp_path, "serve", "--workers", "1", ready=b"connected to relay worker")
    result = tmp_path / "report.json"
    command = [sys.executable, "-m", "videocall", "loadtest", server.url, "--calls", "2", "--duration", "20",
               *SMALL, "--json", str(result)]
    client = subprocess.Popen(command, env={**os.environ, "VIDEOCALL_CACHE_DIR": str(cache_dir)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        # both calls up (each leg's ICE and DTLS connected: webrtcup went out), then media flows a moment
        while server.log_path.read_text(errors="replace").count(" leg connected") < 4:
            assert time.monotonic() < deadline and client.poll() is None, "the load test never got its calls up"
            time.sleep(0.1)
        time.sleep(1.0)
        server.kill()
        stdout, stderr = client.communicate(timeout=40)
    finally:
        server.kill()
        if client.poll() is None:
            client.kill()
    assert "Traceback" not in stdout + stderr, stdout + stderr
    assert client.returncode == 1, stdout + stderr
    report = json.loads(result.read_text())
    assert report["calls"]["failed"] == 2
    reasons = " ".join(report["calls"]["failures"])
    assert "server closed" in reasons and "mid-call" in reasons, report["calls"]
    assert "server closed" in stdout


# --- the pure parts ----------------------------------------------------------------------------------


def _vp8_keyframe(width: int, height: int) -> bytes:
    descriptor = bytes([0x90, 0x80, 0x00])  # X, S, PID 0; I with a 7-bit picture id
    header = bytes([0x00, 0x00, 0x00]) + b"\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")
    return descriptor + header + b"\x00" * 20


def test_stream_stats_count_loss_across_sequence_wrap_and_read_vp8_keyframes() -> None:
    stats = StreamStats(kind="video", codec="vp8", clock_rate=90_000)
    sequence = [65533, 65534, 65535, 0, 2, 3]  # 1 lost, across the wrap
    for n, seq in enumerate(sequence):
        stats.on_packet(seq=seq, timestamp=3000 * n, ssrc=7, marker=True, payload=_vp8_keyframe(320, 240),
                        arrival=n / 30)
    assert stats.packets == 6 and stats.expected == 7 and stats.lost == 1
    assert stats.resolution == (320, 240) and stats.keyframes == 6 and stats.malformed == 0
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)  # arrivals exactly on the media clock


def test_stream_stats_jitter_and_malformed_payloads() -> None:
    stats = StreamStats(kind="audio", codec="opus", clock_rate=48_000)
    for n in range(50):
        late = 0.005 if n % 2 else 0.0
        stats.on_packet(seq=n, timestamp=960 * n, ssrc=1, marker=False, payload=b"\xfc\x00", arrival=n * 0.02 + late)
    assert 3 < stats.jitter_ms < 5.5  # RFC 3550 estimate of a 5 ms alternating delay
    stats.on_packet(seq=50, timestamp=960 * 50, ssrc=1, marker=False, payload=b"", arrival=1.0)
    assert stats.malformed == 1
    h264 = StreamStats(kind="video", codec="h264", clock_rate=90_000)
    h264.on_packet(seq=1, timestamp=0, ssrc=2, marker=True, payload=b"\x80\x00", arrival=0.0)  # forbidden bit
    assert h264.malformed == 1


def test_percentiles_and_reasons_that_add_up() -> None:
    assert percentiles([10.0, 20.0, 30.0, 40.0, 50.0]) == {"n": 5, "p50": 30.0, "p95": 48.0, "p99": 49.6, "max": 50.0}
    assert percentiles([])["p95"] is None
    assert (normalise_reason("server closed lt-a1b2c3-17-b's WebSocket mid-call")
            == normalise_reason("server closed lt-ffffff-2-b's WebSocket mid-call")
            == "server closed callee's WebSocket mid-call")


def test_options_are_checked_before_anything_runs() -> None:
    parser = build_parser()
    args = parser.parse_args(["ws://h/", "--bitrate", "1.5M", "--resolution", "1280x720", "--codec", "h264"])
    assert args.bitrate == 1_500_000 and args.resolution == (1280, 720)
    out = subprocess.run([sys.executable, "-m", "videocall", "loadtest", "ws://h/", "--resolution", "641x480"],
                         check=False, capture_output=True, text=True)
    assert out.returncode == 2 and "even" in out.stderr and "Traceback" not in out.stderr


# --- the same load against the real Janus (opt-in, as tests/e2e) ---------------------------------


JANUS_SCRIPTS = Path(os.environ.get("VIDEOCALL_JANUS_SCRIPTS", "/work/shared/janus"))


@pytest.mark.skipif(os.environ.get("VIDEOCALL_TEST_JANUS") != "1", reason="real Janus runs only with VIDEOCALL_TEST_JANUS=1")
def test_the_same_load_runs_against_real_janus(tmp_path: Path, cache_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("Janus in its network namespace needs root")
    script = str(JANUS_SCRIPTS / "janus-in-netns.sh")
    existed = "vcjanus" in subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout
    if not existed:
        subprocess.run([script, "up"], check=True, capture_output=True)
    port = free_port()
    with open(tmp_path / "janus.log", "wb") as log:
        janus_proc = subprocess.Popen([script, "run", str(port), str(tmp_path / "recordings")], stdout=log,
                                      stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmp_path)},
                                      start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("10.77.0.2", port)) == 0:
                    break
            assert time.monotonic() < deadline and janus_proc.poll() is None, (tmp_path / "janus.log").read_text()
            time.sleep(0.2)
        result = tmp_path / "report.json"
        out = loadtest(f"ws://10.77.0.2:{port}/", "--calls", "2", "--duration", "3", *SMALL,
                       cache=cache_dir, json_path=result)  # offers 10.77.0.1: the route to Janus
        no_traceback(out)
        assert out.returncode == 0, out.stdout + out.stderr
        report = json.loads(result.read_text())
        assert report["options"]["ice_address"] == "10.77.0.1"
        assert all(m["received"] > 0 for kinds in report["media"].values() for m in kinds.values())
    finally:
        os.killpg(janus_proc.pid, signal.SIGTERM)
        janus_proc.wait(10)
        if not existed:
            subprocess.run([script, "down"], check=False, capture_output=True)
