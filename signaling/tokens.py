"""The stored tokens of Janus's stored-token mode (``token_auth`` on, no ``token_auth_secret``).

Each token is allowed a set of plugins, as Janus's ``add_token`` gives them: none named
means every plugin we have; unknown plugins are skipped. The store is in memory, or, with
``token_store`` set, a JSON file ``{"tokens": {"<token>": ["janus.plugin.videocall"]}}``
shared by ``videocall tokens add|list|remove`` and the running server: a write replaces the
file atomically (a temporary file in the same folder, then ``os.replace``; mode 0600, as it
holds credentials) under an exclusive lock, and the server re-reads the file when its
inode, modification time or size changes, so a token added or removed applies to the next request
without a restart. A file that cannot be read keeps the tokens last read, with one warning.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from signaling.janus_replies import PLUGIN_VIDEOCALL

log = logging.getLogger("videocall.tokens")

#: The plugins a token can be allowed (Janus skips the names of plugins it does not have).
KNOWN_PLUGINS = frozenset({PLUGIN_VIDEOCALL})


class TokenStore:
    """Tokens and their plugins, in memory or in the ``path`` JSON file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self._tokens: dict[str, frozenset[str]] = {}
        self._seen: tuple[int, int, int] | None = None
        self._warned = False
        self._refresh()

    # --- reading ----------------------------------------------------------------------------

    def plugins_of(self, token: str) -> frozenset[str] | None:
        """The plugins ``token`` may attach to, or ``None`` if it is not stored."""
        self._refresh()
        return self._tokens.get(token)

    def tokens(self) -> dict[str, frozenset[str]]:
        self._refresh()
        return dict(self._tokens)

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._tokens, self._seen = {}, None
            return
        except OSError as exc:
            self._warn(exc)
            return
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # each write is a new file: a new inode
        if seen == self._seen:
            return
        try:
            self._tokens = _parse(self.path.read_bytes())
        except (OSError, ValueError) as exc:
            self._warn(exc)
            return
        self._seen, self._warned = seen, False

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            log.warning("token_store %s unreadable (%s); keeping the %d token(s) read before",
                        self.path, exc, len(self._tokens))
            self._warned = True

    # --- writing ------------------------------------------------------------------------------

    def add(self, token: str, plugins: Iterable[str] = ()) -> tuple[frozenset[str], list[str]]:
        """Store ``token`` allowed ``plugins`` (all we have if none is named, as Janus's
        ``add_token``); returns what it is allowed and the unknown names it skipped. Adding
        a stored token again grants it the plugins named as well."""
        asked = list(plugins)
        skipped = [name for name in asked if name not in KNOWN_PLUGINS]
        granted = frozenset(name for name in asked if name in KNOWN_PLUGINS) if asked else KNOWN_PLUGINS
        with self._editing() as tokens:
            tokens[token] = tokens.get(token, frozenset()) | granted
            result = tokens[token]
        return result, skipped

    def remove(self, token: str) -> bool:
        """Forget ``token``; False if it was not stored."""
        with self._editing() as tokens:
            return tokens.pop(token, None) is not None

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, frozenset[str]]]:
        if self.path is None:
            yield self._tokens
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            tokens = _parse(self.path.read_bytes()) if self.path.exists() else {}
            yield tokens
            _write_atomically(self.path, _serialise(tokens))
        self._seen = None
        self._refresh()


def _parse(data: bytes) -> dict[str, frozenset[str]]:
    loaded = json.loads(data) if data.strip() else {"tokens": {}}
    table = loaded.get("tokens") if isinstance(loaded, dict) else None
    if not isinstance(table, dict) or not all(
        isinstance(plugins, list) and all(isinstance(name, str) for name in plugins) for plugins in table.values()
    ):
        raise ValueError('expected {"tokens": {"<token>": ["<plugin>", ...]}}')
    return {str(token): frozenset(plugins) for token, plugins in table.items()}


def _serialise(tokens: dict[str, frozenset[str]]) -> bytes:
    table = {token: sorted(plugins) for token, plugins in sorted(tokens.items())}
    return (json.dumps({"tokens": table}, indent=2) + "\n").encode("utf-8")


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)  # mkstemp made it 0600
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
