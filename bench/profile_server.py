#!/usr/bin/env python
"""Where ``videocall serve``'s CPU goes, by library and by Python package: the profiles behind
issue 18's "what stands in the way" (``bench/compare_janus.py`` says how much, this says where).

    python bench/profile_server.py signalling   # round trips: create, attach, register, list, ...
    python bench/profile_server.py setup        # calls of 0.1 s: call, ICE, DTLS, hangup
    python bench/profile_server.py setup --seconds 20 --calls 40

Starts ``videocall serve --workers 1`` on loopback (``--log-level WARNING``), warms it up with one
call, then loads it with ``videocall loadtest`` twice, the same way each time:

1. under ``perf record`` (all of the tree's processes): the share of CPU samples per library
   (the interpreter, the kernel, OpenSSL, uvloop, pydantic-core, ...) for each process role;
2. under ``py-spy record --nonblocking`` (the signalling process, or for ``setup`` the worker too):
   the share of samples per Python package of the innermost Python frame (``websockets``,
   ``signaling``, ``asyncio``, ``aiortc``, ``aioice``, ...) and the top functions.

The two runs are separate because each tool slows the process it samples. Needs root (perf,
py-spy attach) and both tools; figures are shares, so a busy machine shifts them less than it
shifts absolute CPU (run it on a quiet one anyway).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADS = {
    "signalling": ["--signalling-only", "--clients", "30"],
    "setup": ["--rate", "4"],
}
#: A library's file name -> the name the table gives it.
LIBRARIES = [
    ("libpython", "the interpreter (libpython)"), ("[kernel", "the kernel"), ("libcrypto", "OpenSSL (libcrypto)"),
    ("libssl", "OpenSSL (libssl)"), ("_rust.abi3", "cryptography (Rust)"), ("_binding.abi3", "libsrtp (pylibsrtp)"),
    ("uvloop", "uvloop"), ("loop.cpython", "uvloop"), ("pydantic_core", "pydantic-core"), ("orjson", "orjson"),
    ("msgpack", "msgpack"),
    ("libc.so", "libc"), ("speedups", "websockets' C speedups"), ("_cffi", "cffi"),
    ("av.libs", "PyAV's FFmpeg"), ("lib-dynload", "Python's C modules"), ("_asyncio.", "Python's C modules"),
    ("_struct.", "Python's C modules"),
]


def _role(pid: int) -> str:
    name = Path(f"/proc/{pid}/comm").read_text().strip()
    return {"vc-relay-forks": "fork server"}.get(name, "worker" if name.startswith("vc-relay-") else "signalling")


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(child) for child in children)
    return found


def _serve(port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "videocall", "serve", "--workers", "1", "--port", str(port),
               "--ice-enforce-list", "127.0.0.1", "--log-level", "WARNING"]
    # every load client is on this one address: no per-address limits (as bench/compare_janus.py)
    env = {**os.environ, "VIDEOCALL_MAX_CONNECTIONS_PER_ADDRESS": "0", "VIDEOCALL_CREATE_RATE": "0",
           "VIDEOCALL_REGISTER_RATE": "0"}
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"videocall serve did not get ready; log:\n{log.read_text()[-2000:]}")


def _load(port: int, part: str, seconds: float, calls: int) -> None:
    if part == "signalling":
        extra = [*LOADS[part], "--duration", str(seconds)]
    else:  # as little media as the load tester allows: the profile is the calls' setup and hangup
        extra = [*LOADS[part], "--calls", str(calls), "--duration", "0.1"]
    subprocess.run([sys.executable, "-m", "videocall", "loadtest", f"ws://127.0.0.1:{port}/", "--quiet", *extra],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def _by_library(perf_data: Path, roles: dict[int, str]) -> dict[str, dict[str, float]]:
    command = ["perf", "report", "-i", str(perf_data), "--no-children", "--sort", "pid,dso", "-g", "none", "--stdio",
               "--percent-limit", "0.2"]
    report = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    shares: dict[str, dict[str, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\d+):\S+\s+(\S+)", line)
        if not match:
            continue
        percent, pid, dso = float(match[1]), int(match[2]), match[3]
        name = next((label for key, label in LIBRARIES if key in dso), dso)
        shares[roles.get(pid, "other")][name] += percent
    return shares


def _package(frame: str) -> str:
    """The package of one py-spy frame ``function (package/module.py:line)``; a sample whose
    innermost Python frame is asyncio's ``Runner.run`` is in C under the event loop."""
    function, _, where = frame.rpartition(" (")
    if function == "Runner.run" or (function == "run" and where.startswith("asyncio/runners.py")):
        return "C under the event loop (uvloop: sockets, the kernel, callbacks' C)"
    path = where.rsplit(":", 1)[0]
    return path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")


def _by_package(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    packages: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if ".py" in frame]
        if not frames:
            continue
        leaf = frames[-1]
        packages[_package(leaf)] += int(count)
        functions[re.sub(r":\d+\)$", ")", leaf.split(" (", 1)[0] + " (" + leaf.rpartition("/")[2])] += int(count)
    return packages, functions


def _print_shares(title: str, counter: collections.Counter[str] | dict[str, float], top: int = 12) -> None:
    """The ``top`` entries of ``counter`` as percentages of its total."""
    total = sum(counter.values()) or 1
    print(f"  {title}")
    for name, value in sorted(counter.items(), key=lambda item: -item[1])[:top]:
        print(f"    {100 * value / total:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=sorted(LOADS), help="what to load the server with")
    parser.add_argument("--seconds", type=float, default=10.0, help="signalling: seconds of round trips (default 10)")
    parser.add_argument("--calls", type=int, default=24, help="setup: calls of 0.1 s of media, 4 a second (default 24)")
    parser.add_argument("--port", type=int, default=18388)
    parser.add_argument("--keep", type=Path, help="keep perf.data, py-spy's stacks and the server log here")
    args = parser.parse_args()
    for tool in ("perf", "py-spy"):
        if shutil.which(tool) is None and not Path(sys.executable).with_name(tool).exists():
            parser.error(f"{tool} is needed")
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="vc-profile-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        server = _serve(args.port, work / "serve.log")
        try:
            _load(args.port, "setup", 1, 1)  # warm-up: lazy imports, first call's paths
            pids = [pid for pid in _tree(server.pid) if _role(pid) != "fork server"]
            roles = {pid: _role(pid) for pid in pids}
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-o", str(work / "perf.data"),
                                     "-p", ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            _load(args.port, args.part, args.seconds, args.calls)
            perf.send_signal(signal.SIGINT)
            perf.wait()
            spies = {role: subprocess.Popen([py_spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw",
                                             "--output", str(work / f"{role}.txt"), "--nonblocking"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for pid, role in roles.items() if role == "signalling" or args.part == "setup"}
            time.sleep(1.0)
            _load(args.port, args.part, args.seconds, args.calls)
            for spy in spies.values():
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(20)
        print(f"videocall serve --workers 1, {args.part} load ({' '.join(LOADS[args.part])})")
        for role, shares in sorted(_by_library(work / "perf.data", roles).items()):
            _print_shares(f"{role}: CPU samples by library (perf)", shares)
        for role in spies:
            raw = work / f"{role}.txt"
            if raw.exists():
                packages, functions = _by_package(raw)
                _print_shares(f"{role}: Python samples by package of the innermost frame (py-spy)", packages)
                _print_shares(f"{role}: top functions (innermost frame)", functions, top=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
