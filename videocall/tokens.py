"""``videocall tokens add|list|remove``: the stored tokens of Janus's stored-token mode.

Edits the ``token_store`` file (from ``--config``, ``VIDEOCALL_TOKEN_STORE`` or
``--token-store``) that a running ``videocall serve``/``signaling`` with ``token_auth`` on
and no ``token_auth_secret`` reads before each request (``signaling.tokens``). Mirrors the
Admin API's ``add_token``/``list_tokens``/``remove_token``: a token added with no
``--plugin`` may use every plugin; unknown plugins are skipped with a warning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from signaling.tokens import TokenStore

EPILOG = """\
examples:
  videocall tokens add --token-store /etc/videocall/tokens.json s3cr3t-t0ken
  videocall tokens add --plugin janus.plugin.videocall s3cr3t-t0ken
  videocall tokens list
  videocall tokens remove s3cr3t-t0ken
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videocall tokens", description="Manage the stored tokens of token_auth (no token_auth_secret).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="store a token (again: allow it more plugins)")
    add.add_argument("token")
    add.add_argument("--plugin", action="append", dest="plugins", default=[], metavar="PLUGIN",
                     help="a plugin the token may attach to (repeatable; default: all)")
    sub.add_parser("list", help="the stored tokens and their plugins")
    remove = sub.add_parser("remove", help="forget a token")
    remove.add_argument("token")
    for action in sub.choices.values():
        action.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings (for token_store)")
        action.add_argument("--token-store", metavar="FILE", help="the JSON file of stored tokens")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from shared.settings import load

    try:
        path = load(args.config, token_store=args.token_store).token_store
    except (ValueError, OSError) as exc:
        parser.error(f"invalid settings: {exc}")
    if not path:
        parser.error("no token_store: give --token-store FILE (or VIDEOCALL_TOKEN_STORE, or token_store in --config)")
    store = TokenStore(path)
    try:
        if args.action == "add":
            plugins, skipped = store.add(args.token, args.plugins)
            for name in skipped:
                print(f"no such plugin '{name}', skipped", file=sys.stderr)
            print(f"token added; plugins: {', '.join(sorted(plugins)) or '(none)'}")
        elif args.action == "list":
            for token, plugins in sorted(store.tokens().items()):
                print(f"{token}\t{','.join(sorted(plugins))}")
        elif not store.remove(args.token):
            print("no such token", file=sys.stderr)
            return 1
        else:
            print("token removed")
    except (OSError, ValueError) as exc:
        print(f"videocall tokens: {path}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
