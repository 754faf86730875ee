"""Boundaries the architecture promises: the signalling process never loads aiortc."""

from __future__ import annotations

import subprocess
import sys


def test_signalling_never_imports_aiortc() -> None:
    code = (
        "import sys\n"
        "import videocall.cli, signaling.server, signaling.plugin_runner, signaling.relay_client, shared.ipc\n"
        "videocall.cli.build_parser()\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'aiortc', 'aioice', 'av', 'mediarelay'})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"signalling loaded: {out.stdout.strip()}"


def test_help_explains_every_subcommand() -> None:
    for args in ([], ["serve"], ["signaling"], ["relay"]):
        out = subprocess.run([sys.executable, "-m", "videocall", *args, "--help"], capture_output=True, text=True, check=False)
        assert out.returncode == 0 and "VIDEOCALL_" in out.stdout, out.stdout + out.stderr


def test_bad_setting_is_one_clear_line() -> None:
    out = subprocess.run([sys.executable, "-m", "videocall", "serve", "--rtp-port-range", "9-3"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert "rtp_port_range" in out.stderr and "Traceback" not in out.stderr
