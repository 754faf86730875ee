"""``videocall loadtest URL``: the options, checked, then handed to the media or signalling run.

``videocall.cli`` forwards every argument after ``loadtest`` here, importing this module only
when the subcommand runs; nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

EPILOG = """\
examples:
  videocall loadtest ws://127.0.0.1:8188/ --calls 10 --duration 20 --rate 2
  videocall loadtest ws://10.77.0.2:8188/ --calls 20 --codec h264 --resolution 1280x720 --bitrate 1500k
  videocall loadtest ws://127.0.0.1:8188/ --calls 40 --processes 2 --json result.json --server-pid 1234
  videocall loadtest ws://127.0.0.1:8188/ --calls 2 --verify          # also decode a sample
  videocall loadtest ws://127.0.0.1:8188/ --signalling-only --clients 200 --duration 10

Each call is two users, each with its own WebSocket and session: register, call with an offer,
accept with an answer, then media both ways for --duration seconds after both webrtcup, then
hangup. Senders replay a clip encoded once with PyAV (cached in ~/.cache/videocall/clips);
receivers count RTP without decoding. Exit status: 0 if every call succeeded with media both
ways, 1 otherwise (the report says why), 2 for bad options.
"""


def _bitrate(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a bitrate: {text!r} (e.g. 800k, 1.5M, 300000)")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()]
    if not 50_000 <= value <= 20_000_000:
        raise argparse.ArgumentTypeError("bitrate must be between 50k and 20M")
    return int(value)


def _resolution(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a resolution: {text!r} (e.g. 640x480)")
    width, height = int(match.group(1)), int(match.group(2))
    if width % 2 or height % 2 or not (16 <= width <= 3840 and 16 <= height <= 2160):
        raise argparse.ArgumentTypeError("width and height must be even, 16 to 3840x2160")
    return width, height


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videocall loadtest",
        description="Load any server speaking the Janus VideoCall API (ours or Janus) with calls "
                    "and media, or with signalling only, and report setup times, delivery and loss.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8188/")
    calls = parser.add_argument_group("calls with media")
    calls.add_argument("--calls", type=_positive(int), default=1, metavar="N", help="calls (pairs of users), default 1")
    calls.add_argument("--duration", type=_positive(float), default=10.0, metavar="S",
                       help="seconds of media per call after both webrtcup (default 10); the first second is warm-up")
    calls.add_argument("--rate", type=_positive(float), default=5.0, metavar="R", help="calls started per second (default 5)")
    calls.add_argument("--processes", type=_positive(int), default=1, metavar="P",
                       help="load client processes the calls are spread over (default 1)")
    calls.add_argument("--codec", choices=["vp8", "h264", "opus-only"], default="vp8",
                       help="video codec (with Opus audio), or Opus alone (default vp8)")
    calls.add_argument("--audio-only", action="store_true", help="Opus only, no video (same as --codec opus-only)")
    calls.add_argument("--bitrate", type=_bitrate, default=_bitrate("800k"), metavar="BPS",
                       help="video bitrate of the clip, e.g. 800k (default), 1.5M")
    calls.add_argument("--resolution", type=_resolution, default=(640, 480), metavar="WxH", help="video size (default 640x480)")
    calls.add_argument("--ice-address", metavar="ADDR",
                       help="the address clients offer as host candidate (default: the local address routing to "
                            "the server, 127.0.0.1 for a loopback server; 10.77.0.1 for Janus in its namespace)")
    calls.add_argument("--verify", action="store_true",
                       help="also decode the media of one call per process with aiortc's decoders, to prove it intact")
    signalling = parser.add_argument_group("signalling only")
    signalling.add_argument("--signalling-only", action="store_true",
                            help="no media: many clients doing create/attach/register/list/detach")
    signalling.add_argument("--clients", type=_positive(int), default=50, metavar="N",
                            help="concurrent WebSocket clients (default 50)")
    report = parser.add_argument_group("report")
    report.add_argument("--json", metavar="FILE", dest="json_path", help="also write the report as JSON")
    report.add_argument("--server-pid", type=_positive(int), metavar="PID",
                        help="the server's process id (on this machine): its CPU and memory from /proc, children included")
    report.add_argument("--quiet", action="store_true", help="no live progress display")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not re.match(r"^wss?://", args.url):
        parser.error(f"URL must start with ws:// or wss://: {args.url!r}")
    try:
        if args.signalling_only:
            from loadtest.signalling import SignallingOptions
            from loadtest.signalling import run as run_signalling

            return run_signalling(SignallingOptions(
                url=args.url, clients=args.clients, duration=args.duration, processes=args.processes,
                json_path=args.json_path, server_pid=args.server_pid, quiet=args.quiet))
        from loadtest.runner import LoadOptions, default_ice_address, run

        codec = "opus" if args.audio_only or args.codec == "opus-only" else args.codec
        return run(LoadOptions(
            url=args.url, calls=args.calls, rate=args.rate, duration=args.duration, processes=args.processes,
            codec=codec, width=args.resolution[0], height=args.resolution[1], bitrate=args.bitrate,
            ice_address=args.ice_address or default_ice_address(args.url), verify=args.verify,
            json_path=args.json_path, server_pid=args.server_pid, quiet=args.quiet))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
