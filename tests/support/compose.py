"""``docker-compose.yml`` run as plain processes (no Docker engine here), for the fleet tests.

Each service's own ``command`` and ``environment`` from the compose file run as local
processes, the file's ``${VAR:-default}`` variables set to free ports, its service names
mapped to 127.0.0.1 and ``redis`` being the Redis this machine runs (under a key prefix of
the caller's own), so the tests exercise exactly what the file deploys.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import yaml

from tests.support.servers import free_port, videocall_command

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SERVICES = ("worker1", "worker2", "signal1", "signal2")
_VAR = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, as ``docker compose`` reads them."""
    def one(m: re.Match[str]) -> str:
        name, kind, text = m.groups()
        if variables.get(name):
            return variables[name]
        if kind == "?":
            raise ValueError(f"{name}: {text}")
        return text or ""

    return _VAR.sub(one, value)


def local(value: str, variables: dict[str, str]) -> str:
    """One compose string as it runs here: variables set, service names on 127.0.0.1."""
    text = interpolate(value, variables)
    text = text.replace("0.0.0.0", "127.0.0.1")
    for name in ("redis", *SERVICES):
        text = re.sub(rf"(?<=[/:]){name}(?=:)", "127.0.0.1", text)
    return text


def as_processes(variables: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
    """service -> (argv, environment) for every videocall service of the compose file."""
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    assert set(services) == {"redis", *SERVICES}
    out = {}
    for name in SERVICES:
        spec = services[name]
        argv = [local(str(arg), variables) for arg in spec["command"]]
        assert argv[0] == "videocall", f"{name} must run the videocall command"
        env = {key: local(str(value), variables) for key, value in spec.get("environment", {}).items()}
        out[name] = ([*videocall_command(), *argv[1:]], env)
    return out


def healthcheck(name: str, variables: dict[str, str]) -> list[str]:
    test = yaml.safe_load(COMPOSE.read_text())["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [local(str(arg), variables) for arg in test[1:]]


@dataclass
class Fleet:
    """The compose topology running: its variables (ports) and its processes by service."""

    variables: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = Path()

    def url(self, service: str) -> str:
        return f"ws://127.0.0.1:{self.variables[service.upper() + '_PORT']}/"

    def log(self, service: str) -> str:
        return (self.logs / f"{service}.log").read_text(errors="replace")


class FleetError(RuntimeError):
    """A service of the fleet exited or never became ready (its log's tail is in the text)."""


@contextmanager
def running_fleet(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[Fleet]:
    """The compose topology running; ``extra_env`` is added to every service's environment."""
    prefix = f"videocall-test-{uuid.uuid4().hex[:8]}:"
    variables = {
        "REDIS_PORT": "6379", "VIDEOCALL_REDIS_KEY_PREFIX": prefix, "ICE_ENFORCE_LIST": "127.0.0.1",
        "WORKER1_PORT": str(free_port()), "WORKER2_PORT": str(free_port()),
        "SIGNAL1_PORT": str(free_port()), "SIGNAL2_PORT": str(free_port()),
        "RELAY_SECRET": f"test-relay-secret-{uuid.uuid4().hex}",
    }
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    fleet = Fleet(variables, logs=tmp_path)
    try:
        for name, (argv, env) in as_processes(variables).items():
            log = (tmp_path / f"{name}.log").open("wb")
            full_env = {**os.environ, **env, **(extra_env or {}), "VIDEOCALL_RECORDINGS_DIR": str(tmp_path / "recordings"),
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            started.append((name, subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                                   cwd=tmp_path, start_new_session=True)))
            fleet.processes[name] = started[-1][1]
        for name in ("signal1", "signal2"):
            wait_ready(name, variables, started, tmp_path)
        yield fleet
    finally:
        for _, process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for name, process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise FleetError(f"{name} did not stop on SIGTERM") from None
        client = redis.Redis(host="127.0.0.1", port=6379)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def wait_ready(name: str, variables: dict[str, str], started: list[tuple[str, subprocess.Popen[bytes]]],
               logs: Path) -> None:
    """Until the compose health check of ``name`` passes (it asks /readyz)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for service, process in started:
            if process.poll() is not None:
                raise FleetError(f"{service} exited ({process.returncode}): {(logs / f'{service}.log').read_text()[-2000:]}")
        if subprocess.run(healthcheck(name, variables), capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise FleetError(f"{name} never became ready: {(logs / f'{name}.log').read_text()[-2000:]}")


def metric(port: str, name: str) -> dict[str, float]:
    """Samples of one metric from a node's /metrics, by their label text."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in body.splitlines():
        if line.startswith(name):
            labels, _, value = line[len(name):].rpartition(" ")
            samples[labels] = float(value)
    return samples
