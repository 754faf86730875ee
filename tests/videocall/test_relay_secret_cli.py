"""relay_secret in the processes: where it is read from, how it reaches workers, who refuses to start.

A worker on a non-loopback TCP address without a secret exits 2 before it binds; with one it
serves only nodes that prove it. ``serve`` makes one up for its own workers and hands it over
over the control socket of the fork server it forked from itself (or, in the environment of
one started anew), never on a command line, and it shows in no log and no ``/metrics``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from shared.ipc import IpcError, connect
from shared.settings import Settings, load
from tests.support.servers import children, free_port, videocall_command
from videocall.supervisor import settings_env
from videocall.worker_forks import FORK_SERVER_NAME, WORKER_NAME_PREFIX

SECRET = "cli-relay-secret-0123456789"


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VIDEOCALL_RELAY_SECRET")}
    return {**env, **extra}


# --- settings ----------------------------------------------------------------------------------


def test_relay_secret_from_the_environment_or_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOCALL_RELAY_SECRET", SECRET)
    assert load().relay_secret.get_secret_value() == SECRET
    monkeypatch.delenv("VIDEOCALL_RELAY_SECRET")
    file = tmp_path / "relay_secret"
    file.write_text(f"{SECRET}\n")
    monkeypatch.setenv("VIDEOCALL_RELAY_SECRET_FILE", str(file))
    settings = load()
    assert settings.relay_secret.get_secret_value() == SECRET
    assert "relay-secret" not in repr(settings) and "relay-secret" not in str(settings.model_dump())


@pytest.mark.parametrize(("given", "error"), [
    ({"relay_secret": "short-one"}, "relay_secret must be at least 16 characters"),
    ({"relay_secret": SECRET, "relay_secret_file": "/etc/hostname"}, "set relay_secret or relay_secret_file, not both"),
    ({"relay_secret_file": "/nonexistent/relay"}, "relay_secret_file /nonexistent/relay: No such file or directory"),
])
def test_a_bad_relay_secret_is_refused_without_echoing_it(given: dict[str, str], error: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(**given)
    assert error in str(refused.value)
    assert "short-one" not in str(refused.value) and SECRET not in str(refused.value)


def test_workers_get_the_relay_secret_in_their_environment_only(tmp_path: Path) -> None:
    file = tmp_path / "relay_secret"
    file.write_text(SECRET)
    env = settings_env(Settings(relay_secret_file=str(file), api_secret="api-s3cret-value"))
    assert env["VIDEOCALL_RELAY_SECRET"] == SECRET
    assert env["VIDEOCALL_RELAY_SECRET_FILE"] == ""  # read once; a worker does not read it again
    assert "VIDEOCALL_API_SECRET" not in env
    assert settings_env(Settings())["VIDEOCALL_RELAY_SECRET"] == ""


# --- videocall relay -----------------------------------------------------------------------------


def test_a_worker_on_a_public_address_without_a_secret_refuses_to_start() -> None:
    port = free_port("0.0.0.0")
    with socket.socket() as taken:  # held: a worker that tried to bind would fail another way
        taken.bind(("0.0.0.0", port))
        taken.listen()
        done = subprocess.run([*videocall_command(), "relay", "--listen", f"tcp:0.0.0.0:{port}"],
                              env=clean_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        (f"videocall relay: refusing to listen on tcp:0.0.0.0:{port} without a relay secret: anyone who reaches "
         "it could drive this worker; set VIDEOCALL_RELAY_SECRET or relay_secret_file (the same on its nodes), "
         "or listen on loopback or a unix socket")]


def test_a_too_short_secret_is_refused_and_not_echoed() -> None:
    done = subprocess.run([*videocall_command(), "relay", "--listen", "tcp:0.0.0.0:1"],
                          env=clean_env(VIDEOCALL_RELAY_SECRET="tiny-secret"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "invalid settings: relay_secret: relay_secret must be at least 16 characters" in done.stderr
    assert "tiny-secret" not in done.stderr + done.stdout


@pytest.mark.timeout(90)
def test_a_worker_with_a_secret_serves_only_nodes_that_prove_it() -> None:
    port = free_port("0.0.0.0")
    process = subprocess.Popen([*videocall_command(), "relay", "--listen", f"tcp:0.0.0.0:{port}", "--log-level",
                                "DEBUG"], env=clean_env(VIDEOCALL_RELAY_SECRET=SECRET),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    address = f"tcp:127.0.0.1:{port}"

    async def nodes() -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                node = await connect(address, node_id="n1", timeout=5, secret=SecretStr(SECRET))
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the worker did not start"
                await asyncio.sleep(0.2)
        assert node.peer is not None and node.peer.pid == process.pid
        with pytest.raises(IpcError, match=r"^hello refused: no relay_secret proof"):
            await connect(address, node_id="stranger", timeout=5)
        with pytest.raises(IpcError, match=r"^hello refused: wrong relay_secret proof$"):
            await connect(address, node_id="stranger", timeout=5, secret=SecretStr("another-secret-000000"))
        await node.close()

    try:
        asyncio.run(nodes())
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert output.count("refused hello from node 'stranger' at 127.0.0.1:") == 2
    assert SECRET not in output and "another-secret" not in output


# --- videocall serve -----------------------------------------------------------------------------


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _environ(pid: int) -> dict[str, str]:
    return dict(item.split("=", 1) for item in
                Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item)


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        return probe.connect_ex(str(path)) == 0


def _wait_for(what: str, find: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := find()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return found


@pytest.mark.timeout(90)
def test_serve_gives_its_workers_a_secret_of_its_own_never_on_a_command_line(tmp_path: Path) -> None:
    port = free_port()
    ipc_dir = tmp_path / "ipc"
    process = subprocess.Popen([*videocall_command(), "serve", "--workers", "1", "--port", str(port)],
                               env=clean_env(VIDEOCALL_IPC_DIR=str(ipc_dir), VIDEOCALL_LOG_LEVEL="DEBUG",
                                             VIDEOCALL_ICE_ENFORCE_LIST="127.0.0.1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200
            except OSError:
                ready = False
            if ready:
                break
            assert time.monotonic() < deadline and process.poll() is None, "videocall serve did not get ready"
            time.sleep(0.2)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()

        def one(name: str) -> list[int]:
            found = [pid for pid in children(process.pid, fork_servers=name == FORK_SERVER_NAME) if _comm(pid) == name]
            return found if len(found) == 1 else []

        (first_worker,) = one(f"{WORKER_NAME_PREFIX}0")
        (first_forks,) = one(FORK_SERVER_NAME)
        # serve's own fork (videocall/worker_forks.py prefork) got its settings over its socket:
        # the secret is in no process's environment block nor command line
        for pid in (process.pid, first_forks, first_worker):
            assert "VIDEOCALL_RELAY_SECRET" not in _environ(pid)
        # a fork server started anew is a new interpreter and gets it in its environment, where
        # this test can read it (and its workers with it)
        os.kill(first_forks, signal.SIGKILL)
        os.kill(first_worker, signal.SIGKILL)
        workers = _wait_for("worker 0 replaced", lambda: [pid for pid in one(f"{WORKER_NAME_PREFIX}0")
                                                           if pid != first_worker])
        (forks,) = _wait_for("a new fork server", lambda: one(FORK_SERVER_NAME))
        secret = _environ(workers[0])["VIDEOCALL_RELAY_SECRET"]
        assert len(secret) >= 32 and _environ(forks)["VIDEOCALL_RELAY_SECRET"] == secret
        for pid in (process.pid, forks, workers[0]):
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        _wait_for("the new worker listening", lambda: _accepts(ipc_dir / "worker-0.sock"))
        address = f"unix:{ipc_dir}/worker-0.sock"

        async def nodes() -> None:
            with pytest.raises(IpcError, match=r"^hello refused: no relay_secret proof"):
                await connect(address, node_id="local-stranger", timeout=5)
            node = await connect(address, node_id="test", timeout=5, secret=SecretStr(secret))
            assert node.peer is not None and node.peer.pid == workers[0]
            await node.close()

        asyncio.run(nodes())
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert "refused hello from node 'local-stranger'" in output
    assert secret not in output and secret not in metrics
