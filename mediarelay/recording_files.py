"""Where a recording's files go: names checked, folders made inside the recordings folder.

``prepare`` (blocking: the recorder runs it on its one file thread) checks the base name again
(``recording_name_problem``), creates the parent folders inside the resolved recordings folder,
and refuses any that resolves outside it (a symlink pointing out). The recorder then opens the
files with ``O_NOFOLLOW``. Real Janus writes wherever ``filename`` points; we refuse on purpose.
A refusal leaves nothing behind (``remove_dirs``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from shared.messages import recording_name_problem

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_OUTSIDE = "filename should stay inside the recordings folder (a link in it points outside)"


class RecordingRefused(Exception):
    """A recording that cannot start: the sentence says why (a name, a folder, an open)."""


def safe_name(text: str, limit: int = 64) -> str:
    """``text`` as one file name component: characters outside [A-Za-z0-9._-] become '_'."""
    return _UNSAFE.sub("_", text)[:limit] or "unknown"


def default_base(user: str, peer: str, unix_us: int) -> str:
    """Janus's name when no ``filename`` is given: ``videocall-<user>-<peer>-<time>``, the time
    in microseconds as Janus writes it. A '-' in a name becomes '_' (as any unsafe character
    does), so the name splits back into user and peer (``videocall recordings list``); Janus
    writes the names as they are, and ``alice-1`` with ``bob`` cannot be told from ``alice``
    with ``1-bob``."""
    return f"videocall-{safe_name(user).replace('-', '_')}-{safe_name(peer).replace('-', '_')}-{unix_us}"


def reason_of(exc: OSError) -> str:
    """An OSError as the one sentence a user reads ('no space left on device')."""
    text = exc.strerror or str(exc) or "input/output error"
    return text[:1].lower() + text[1:]


# --- the folder (blocking: the recorder runs it on its EXECUTOR) ----------------------------------


@dataclass
class Prepared:
    """The folder as resolved, and the folders ``prepare`` created (removed again on a refusal)."""

    folder: str
    created: list[str] = field(default_factory=list)


def prepare(recordings_dir: str, base: str) -> Prepared:
    """Check ``base`` and create its parent folders inside ``recordings_dir`` (created too);
    RecordingRefused, with nothing left behind, when it cannot be written there."""
    problem = recording_name_problem(base)
    if problem:
        raise RecordingRefused(problem)
    folder = os.path.realpath(recordings_dir)
    created: list[str] = []
    try:
        _makedirs(folder, created)
        current = folder
        for part in base.split("/")[:-1]:
            current = os.path.join(current, part)
            if os.path.lexists(current):
                if not _inside(os.path.realpath(current), folder):
                    raise RecordingRefused(_OUTSIDE)
            else:
                os.mkdir(current, 0o755)
                created.append(current)
        if not _inside(os.path.realpath(current), folder):
            raise RecordingRefused(_OUTSIDE)
    except OSError as exc:
        remove_dirs(created)
        raise RecordingRefused(f"the recordings folder cannot be used: {reason_of(exc)}") from None
    except RecordingRefused:
        remove_dirs(created)
        raise
    return Prepared(folder, created)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _makedirs(path: str, created: list[str]) -> None:
    if os.path.isdir(path):
        return
    head = os.path.dirname(path)
    if head and head != path:
        _makedirs(head, created)
    os.mkdir(path, 0o755)
    created.append(path)


def remove_dirs(created: list[str]) -> None:
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError:
            pass
