"""Configuration precedence: defaults < config file < VIDEOCALL_* environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings, load, port_range


def test_defaults_work_on_a_laptop(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("VIDEOCALL_"):
            monkeypatch.delenv(name)
    s = load()
    assert (s.host, s.port, s.session_timeout) == ("127.0.0.1", 8188, 60.0)
    assert s.ice_servers == [] and s.ice_enforce_list == [] and s.node_id == "127.0.0.1:8188"


def test_precedence_file_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "videocall.toml"
    config.write_text('port = 7000\nsession_timeout = 5\nice_enforce_list = ["10.0.0.1"]\n')
    assert load(config).port == 7000
    monkeypatch.setenv("VIDEOCALL_PORT", "9000")
    monkeypatch.setenv("VIDEOCALL_ICE_ENFORCE_LIST", "127.0.0.1, lo")
    s = load(config, port=None)
    assert (s.port, s.session_timeout, s.ice_enforce_list) == (9000, 5.0, ["127.0.0.1", "lo"])
    assert load(config, port=1234).port == 1234


def test_json_config_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "c.json"
    good.write_text('{"workers": 3, "rtp_port_range": "20000-20100"}')
    assert load(good).workers == 3
    bad = tmp_path / "c.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="table/object"):
        load(bad)
    unknown = tmp_path / "u.toml"
    unknown.write_text("no_such_setting = 1\n")
    with pytest.raises(ValidationError):
        load(unknown)


@pytest.mark.parametrize("text", ["20000", "a-b", "5-3", "0-10", "1-70000"])
def test_port_range_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="rtp_port_range"):
        port_range(text)
    with pytest.raises(ValidationError):
        Settings(rtp_port_range=text)


def test_port_range_parses() -> None:
    assert port_range("20000-40000") == (20000, 40000)


def test_registry_settings_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from videocall.cli import build_parser, settings_from

    assert (Settings().redis_url, Settings().redis_key_prefix, Settings().registry_lease) == ("", "videocall:", 12.0)
    monkeypatch.setenv("VIDEOCALL_REDIS_URL", "redis://10.0.0.5:6379/0")
    monkeypatch.setenv("VIDEOCALL_REDIS_KEY_PREFIX", "staging:")
    monkeypatch.setenv("VIDEOCALL_REGISTRY_LEASE", "15")
    s = load()
    assert (s.redis_url, s.redis_key_prefix, s.registry_lease) == ("redis://10.0.0.5:6379/0", "staging:", 15.0)
    for command in ("serve", "signaling"):
        args = build_parser().parse_args([command, "--redis-url", "redis://r:6379/1", "--redis-key-prefix", "x:"])
        assert (settings_from(args).redis_url, settings_from(args).redis_key_prefix) == ("redis://r:6379/1", "x:")
    with pytest.raises(ValidationError):
        Settings(registry_lease=0)


def test_a_fleet_node_is_named_after_its_host_not_its_listening_address() -> None:
    import socket

    assert Settings(host="0.0.0.0", port=8188).node_id == "0.0.0.0:8188"
    assert Settings(host="0.0.0.0", port=8188, redis_url="redis://r/0").node_id == f"{socket.gethostname()}:8188"
    assert Settings(node_id="n7", redis_url="redis://r/0").node_id == "n7"
