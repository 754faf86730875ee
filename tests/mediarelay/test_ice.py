"""The relay's ICE settings (ice.py) and the private hooks they rest on (aiortc_hooks)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aioice.ice
import pytest
from aioice import stun
from aiortc import RTCIceServer, RTCPeerConnection

from mediarelay import aiortc_hooks, ice
from mediarelay.aiortc_hooks import ice_sockets, versions
from mediarelay.ice import LOOPBACK
from shared.settings import Settings
from tests.support.relay_clients import client, m_lines, make_offer


def _free_port_range(size: int = 20) -> tuple[int, int]:
    """A range of UDP ports that are free right now on 127.0.0.1 (starting at a random free one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        low = min(probe.getsockname()[1], 65535 - size)
    return low, low + size - 1


# --- aiortc_hooks: versions and private attributes ---------------------------------------------


def test_hooks_refuse_other_aiortc_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "version", lambda name: {"aiortc": "1.17.0", "aioice": "0.13.0", "pylibsrtp": "1.0.0"}[name])
    with pytest.raises(RuntimeError, match=r"aiortc 1\.17\.0 \(need 1\.16\.0\)"):
        aiortc_hooks.check_versions()
    monkeypatch.setattr(versions, "version", lambda name: {"aiortc": "1.16.0", "aioice": "0.13.0", "pylibsrtp": "1.1.0"}[name])
    with pytest.raises(RuntimeError, match=r"pylibsrtp 1\.1\.0 \(need 1\.0\.0\)"):
        aiortc_hooks.check_versions()


def test_installed_versions_are_the_pinned_ones() -> None:
    aiortc_hooks.check_versions()


async def test_every_private_attribute_the_hooks_use_exists() -> None:
    assert await aiortc_hooks.probe() == []
    assert len(aiortc_hooks.PRIVATE_API) >= 10


def test_each_private_name_is_listed_once() -> None:
    names = [(owner, name) for owner, name, _ in aiortc_hooks.PRIVATE_API]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


#: Run in a fresh interpreter: a fingerprint of every attribute of every aiortc/aioice module and
#: class (and aiortc's codec table, a list changed in place), taken before and after importing
#: every module of ``mediarelay``, and again after ``prepare_relay_process()``.
_IMPORT_CHANGES_NOTHING = """
import importlib, inspect, json, pkgutil, sys
import aioice, aiortc

for package in (aiortc, aioice):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)

def fingerprint():
    seen = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("aiortc", "aioice"):
            continue
        for attr, value in vars(module).items():
            seen[f"{name}.{attr}"] = id(value)
            if inspect.isclass(value) and value.__module__ == name:
                for member, inner in vars(value).items():
                    seen[f"{name}.{attr}.{member}"] = id(inner)
    seen["aiortc.codecs.CODECS[]"] = repr(aiortc.codecs.CODECS)
    return seen

def changed(before, after):
    return sorted(k for k in before if k in after and before[k] != after[k])

before = fingerprint()
import mediarelay
for info in pkgutil.walk_packages(mediarelay.__path__, "mediarelay."):
    importlib.import_module(info.name)
imported = fingerprint()
from mediarelay import aiortc_hooks
aiortc_hooks.prepare_relay_process()
prepared = fingerprint()
print(json.dumps({"import": changed(before, imported), "prepare": changed(imported, prepared),
                  "loaded": sorted(m for m in sys.modules if m.startswith("mediarelay."))}))
"""


def test_importing_the_hooks_changes_nothing_until_a_process_is_prepared() -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _IMPORT_CHANGES_NOTHING], capture_output=True, text=True,
                          check=False, timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert "mediarelay.aiortc_hooks.process" in result["loaded"] and "mediarelay.worker" in result["loaded"]
    assert result["import"] == []
    # The fingerprint does see what preparing a relay process changes.
    assert {"aiortc.codecs.CODECS[]", "aiortc.rtcrtpreceiver.RemoteBitrateEstimator",
            "aiortc.rtcdtlstransport.RTCCertificate.generateCertificate"} <= set(result["prepare"])


_CODEC_COPIES = """
import copy, json
from aiortc.codecs import CODECS
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from mediarelay import aiortc_hooks
aiortc_hooks.prepare_relay_process()
odd = RTCRtpCodecParameters(mimeType="video/X", clockRate=90000, parameters={"list": [1]})
checks = []
for codec in [*CODECS["audio"], *CODECS["video"], odd]:
    twin = copy.deepcopy(codec)
    checks.append([twin == codec, twin is not codec, twin.rtcpFeedback is not codec.rtcpFeedback,
                   all(a is not b for a, b in zip(twin.rtcpFeedback, codec.rtcpFeedback, strict=True)),
                   twin.parameters is not codec.parameters])
print(json.dumps({"checks": checks, "odd": copy.deepcopy(odd).parameters["list"] is not odd.parameters["list"]}))
"""


def test_a_prepared_relay_process_still_deep_copies_codecs() -> None:
    """``prepare_relay_process`` copies codecs directly (aiortc's matching deep-copies each): equal,
    sharing nothing mutable; a codec with an unexpected parameter value gets the generic walk."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _CODEC_COPIES], capture_output=True, text=True, check=False,
                          timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["checks"]) > 5 and all(all(check) for check in result["checks"]), result
    assert result["odd"] is True


# --- host candidates -------------------------------------------------------------------------


async def test_loopback_policy_offers_only_127_0_0_1() -> None:
    with ice.installed(LOOPBACK):
        pc = client()
        pc.addTransceiver("audio")
        try:
            sdp = await make_offer(pc)
        finally:
            await pc.close()
    addresses = {address for line in m_lines(sdp) for address, _ in line["candidates"]}
    assert addresses == {"127.0.0.1"}


async def test_leaving_the_policy_gives_aioice_its_own_gathering_back() -> None:
    original = aioice.ice.get_host_addresses
    with ice.installed(LOOPBACK):
        assert aioice.ice.get_host_addresses is not original
        with ice.installed(ice.IcePolicy(addresses=("127.0.0.1",), port_range=(40000, 40010))):
            pass
        assert ice_sockets._installed is LOOPBACK  # the outer policy is back
    assert aioice.ice.get_host_addresses is original
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


async def test_rtp_port_range_binds_every_ice_socket_within_it() -> None:
    low, high = _free_port_range()
    with ice.installed(ice.IcePolicy(addresses=("127.0.0.1",), port_range=(low, high))):
        pcs = [client() for _ in range(3)]
        try:
            for pc in pcs:
                pc.addTransceiver("audio")
                pc.createDataChannel("x")  # a second transport: two sockets per pc
            ports = [port for pc in pcs for line in m_lines(await make_offer(pc)) for _, port in line["candidates"]]
        finally:
            for pc in pcs:
                await pc.close()
    assert ports and all(low <= port <= high for port in ports)


class _FakeStun(asyncio.DatagramProtocol):
    """Answers STUN binding requests as if the client were behind a NAT at 198.51.100.20."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        request = stun.parse_message(data)
        response = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = ("198.51.100.20", addr[1])
        self.transport.sendto(bytes(response), addr)


async def test_stun_candidates_come_from_the_sockets_bound_in_range() -> None:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_FakeStun, local_addr=("127.0.0.1", 0))
    low, high = _free_port_range()
    stun_port = transport.get_extra_info("sockname")[1]
    policy = ice.IcePolicy(addresses=("127.0.0.1",), port_range=(low, high),
                           ice_servers=(RTCIceServer(urls=f"stun:127.0.0.1:{stun_port}"),))
    with ice.installed(policy):
        pc = RTCPeerConnection(policy.rtc_configuration())
        pc.addTransceiver("audio")
        try:
            [line] = m_lines(await make_offer(pc))
        finally:
            await pc.close()
            transport.close()
    [(host, port), (public, public_port)] = line["candidates"]
    assert host == "127.0.0.1" and low <= port <= high
    assert (public, public_port) == ("198.51.100.20", port)


def test_bind_udp_reports_a_full_port_range() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"no free UDP port in rtp_port_range {port}-{port}"):
            ice.bind_udp("127.0.0.1", (port, port))


def test_enforce_list_takes_addresses_and_interface_prefixes() -> None:
    adapters = [
        SimpleNamespace(name="lo", nice_name="lo", ips=[SimpleNamespace(ip="127.0.0.1"), SimpleNamespace(ip=("::1", 0, 0))]),
        SimpleNamespace(name="eth0", nice_name="eth0", ips=[SimpleNamespace(ip="192.0.2.2"),
                                                             SimpleNamespace(ip=("fe80::1", 0, 2))]),
    ]
    assert ice.resolve_enforce_list(["eth", "10.0.0.1", "lo"], adapters) == ["192.0.2.2", "10.0.0.1", "127.0.0.1", "::1"]
    with pytest.raises(ValueError, match="'wlan9' is neither an IP address nor an interface"):
        ice.resolve_enforce_list(["wlan9"], adapters)


# --- what the relay advertises and whom it contacts ------------------------------------------


def test_nat_1_1_mapping_replaces_host_addresses_in_the_sdp() -> None:
    sdp = "\r\n".join([
        "m=audio 5000 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 10.0.0.5",
        "a=candidate:1 1 udp 2130706431 10.0.0.5 5000 typ host",
        "a=candidate:2 1 udp 2130706431 fd00::5 5002 typ host",
        "a=candidate:3 1 udp 1694498815 198.51.100.1 6000 typ srflx raddr 10.0.0.5 rport 5000", "",
    ])
    out = ice.IcePolicy(public_address="203.0.113.7").advertise(sdp)
    assert "c=IN IP4 203.0.113.7" in out
    assert "a=candidate:1 1 udp 2130706431 203.0.113.7 5000 typ host" in out
    assert "fd00::5 5002 typ host" in out  # another family: left alone
    assert "198.51.100.1 6000 typ srflx" in out
    assert ice.IcePolicy().advertise(sdp) == sdp


def test_ice_servers_are_an_explicit_empty_list_by_default() -> None:
    assert ice.rtc_configuration(Settings()).iceServers == []
    assert ice.policy_from_settings(Settings()).rtc_configuration().iceServers == []


def test_ice_servers_parse_stun_and_turn_urls() -> None:
    servers = ice.ice_servers(["stun:stun.example.org:3478", "turn:alice:s3cret@turn.example.org?transport=tcp"])
    assert servers == [
        RTCIceServer(urls="stun:stun.example.org:3478"),
        RTCIceServer(urls="turn:turn.example.org?transport=tcp", username="alice", credential="s3cret"),
    ]
    for bad in ["http://x", "turn:turn.example.org", "stun:u:p@host"]:
        with pytest.raises(ValueError, match="ice_servers entry"):
            ice.ice_servers([bad])


def test_policy_from_settings_uses_the_janus_names() -> None:
    settings = Settings(ice_enforce_list="127.0.0.1", rtp_port_range="20000-20100", nat_1_1_mapping="203.0.113.7")
    assert ice.policy_from_settings(settings) == ice.IcePolicy(
        addresses=("127.0.0.1",), port_range=(20000, 20100), public_address="203.0.113.7")
    with pytest.raises(ValueError, match="nat_1_1_mapping must be an IP address"):
        ice.policy_from_settings(Settings(nat_1_1_mapping="example.org"))
