"""Another device on the network, made on this machine: a network namespace joined to the root
one by a veth pair on a private /30, and a wrapper that runs a program (Chromium) inside it.

Why: "the demo page works over https:// from another device on the LAN" needs a client whose
only way to the server is a LAN address: a browser in its own namespace has its own loopback
and sees the server only at the host end of the veth, as a phone sees a laptop on Wi-Fi.

Needs root (CI runs as root) and iproute2's ``ip``; :class:`LanUnavailable` says what is missing.
Names and addresses come from the pid, so parallel runs do not collide; everything is removed
on exit, even when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LanDevice", "LanUnavailable", "lan_device"]

#: 10.213.0.0/16: private, and unlikely to be a real LAN here; one /30 per pid.
SUBNET_PREFIX = "10.213"


class LanUnavailable(RuntimeError):
    """This machine cannot make a network namespace (not root, no ``ip``, no permission)."""


@dataclass(frozen=True)
class LanDevice:
    """The namespace ``netns``, reached from the root namespace at ``host_address`` (the server's
    LAN address) and itself at ``device_address``; ``wrap(program)`` runs a program inside it."""

    netns: str
    host_link: str
    host_address: str
    device_address: str
    folder: Path

    def wrap(self, program: str) -> str:
        """The path of a script that execs ``program`` (with its arguments) in the namespace;
        ``exec`` keeps the caller's file descriptors (Playwright's pipe to Chromium)."""
        script = self.folder / f"in-{self.netns}-{Path(program).name}"
        script.write_text(f'#!/bin/sh\nexec ip netns exec {self.netns} {program} "$@"\n')
        script.chmod(0o755)
        return str(script)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode:
        raise LanUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")


@contextlib.contextmanager
def lan_device(folder: Path) -> Iterator[LanDevice]:
    """Make the namespace and veth pair, yield them, and remove both whatever happens."""
    if os.geteuid() != 0:
        raise LanUnavailable("root (to create a network namespace with `ip netns add`)")
    if shutil.which("ip") is None:
        raise LanUnavailable("iproute2's `ip` (apt-get install -y iproute2)")
    pid = os.getpid()
    netns, host_link, device_link = f"vclan{pid}", f"vcl{pid}h", f"vcl{pid}d"
    block = (pid % 16384) * 4  # a /30 inside 10.213.0.0/16
    third, fourth = divmod(block, 256)
    host_address, device_address = f"{SUBNET_PREFIX}.{third}.{fourth + 1}", f"{SUBNET_PREFIX}.{third}.{fourth + 2}"
    made_netns = False
    try:
        _ip("netns", "add", netns)
        made_netns = True
        _ip("link", "add", host_link, "type", "veth", "peer", "name", device_link)
        _ip("link", "set", device_link, "netns", netns)
        _ip("addr", "add", f"{host_address}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        _ip("-n", netns, "addr", "add", f"{device_address}/30", "dev", device_link)
        _ip("-n", netns, "link", "set", device_link, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield LanDevice(netns, host_link, host_address, device_address, folder)
    finally:
        # Deleting one end of a veth deletes both; deleting the namespace takes what is left.
        subprocess.run(["ip", "link", "del", host_link], capture_output=True, timeout=10, check=False)
        if made_netns:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10, check=False)
