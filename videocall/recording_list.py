"""``videocall recordings list``: the recordings folder, grouped by call and said in lines.

A folder's ``.mjr`` files are grouped by base name (``<base>-audio.mjr``, ``-video.mjr``,
``-data.mjr``, the names Janus's VideoCall plugin gives them), with who is in each (Janus's
default name is ``videocall-<user>-<peer>-<time>``), what media, how long and how big; files
that are not recordings or are cut short get a line of their own. Only the headers and
frame headers are read, so a listing of a large folder stays cheap.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from mediarelay import mjr

__all__ = ["MEDIA_SUFFIXES", "FileSummary", "Group", "Listing", "summarize", "scan", "print_listing"]

MEDIA_SUFFIXES = {"-audio.mjr": "audio", "-video.mjr": "video", "-data.mjr": "data"}
#: Janus's default base name (janus_videocall.c): videocall-<user>-<peer>-<real time in µs>.
_JANUS_NAME = re.compile(r"videocall-(?P<user>.+?)-(?P<peer>.+)-(?P<time>\d{10,})")
_FRAME_HEAD = struct.Struct("!4sIH")


@dataclass
class FileSummary:
    """One ``.mjr`` file as ``list`` sees it, from its headers alone."""

    path: Path
    size: int
    info: mjr.Info | None = None
    frames: int = 0
    last_offset_ms: int = 0
    truncated: bool = False
    problem: str = ""


def summarize(path: Path) -> FileSummary:
    """The info header and the frame headers, walked with seeks (the packets are not read)."""
    size = path.stat().st_size
    summary = FileSummary(path, size)
    with path.open("rb") as file:
        head = file.read(len(mjr.MAGIC) + 2 + mjr.MAX_INFO)
        try:
            recording = mjr.read(head[:len(mjr.MAGIC) + 2 + _info_length(head)])
        except mjr.MjrError as exc:
            summary.problem = str(exc)
            return summary
        summary.info = recording.info
        if recording.info is None:
            summary.truncated = recording.truncated
            return summary
        offset = len(mjr.MAGIC) + 2 + _info_length(head)
        while offset < size:
            file.seek(offset)
            raw = file.read(_FRAME_HEAD.size)
            if len(raw) < _FRAME_HEAD.size:
                summary.truncated = True
                break
            magic, stamp, length = _FRAME_HEAD.unpack(raw)
            if magic != mjr.FRAME_MAGIC:
                summary.problem = f"no frame header at byte {offset}"
                break
            if offset + _FRAME_HEAD.size + length > size:
                summary.truncated = True
                break
            summary.frames += 1
            summary.last_offset_ms = max(summary.last_offset_ms, stamp)
            offset += _FRAME_HEAD.size + length
    return summary


def _info_length(head: bytes) -> int:
    if len(head) < len(mjr.MAGIC) + 2:
        return 0
    (length,) = struct.unpack_from("!H", head, len(mjr.MAGIC))
    return int(length)


@dataclass
class Group:
    """The files of one base name: its media, and converted files found next to them."""

    base: str
    files: dict[str, FileSummary] = field(default_factory=dict)
    converted: list[str] = field(default_factory=list)

    @property
    def user_peer(self) -> tuple[str, str]:
        match = _JANUS_NAME.fullmatch(Path(self.base).name)
        return (match["user"], match["peer"]) if match else ("", "")

    @property
    def started_us(self) -> int | None:
        times = [f.info.first_frame_us for f in self.files.values() if f.info]
        return min(times) if times else None

    @property
    def duration_s(self) -> float:
        """From the first medium's first frame to the last one's last frame."""
        start = self.started_us
        if start is None:
            return 0.0
        ends = [f.info.first_frame_us + f.last_offset_ms * 1000 for f in self.files.values() if f.info]
        return (max(ends) - start) / 1e6

    def media(self) -> list[str]:
        """``audio:opus``, ``video:vp8``, ``data``: what is there, in that order."""
        parts = []
        for kind in ("audio", "video", "data"):
            summary = self.files.get(kind)
            if summary is not None:
                parts.append(f"{kind}:{summary.info.codec}" if summary.info and kind != "data" else kind)
        return parts

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


@dataclass
class Listing:
    groups: list[Group]
    #: (path relative to the folder, what is wrong with it): not recordings, cut short, unreadable.
    notes: list[tuple[str, str]]


def scan(folder: Path) -> Listing:
    """Every recording under ``folder`` (subfolders too: a ``filename`` may have them)."""
    groups: dict[str, Group] = {}
    others: list[Path] = []
    notes: list[tuple[str, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if not name.endswith(".mjr"):
            others.append(path)
            continue
        kind = next((k for suffix, k in MEDIA_SUFFIXES.items() if name.endswith(suffix)), None)
        base = name[: -len(f"-{kind}.mjr")] if kind else name[: -len(".mjr")]
        try:
            summary = summarize(path)
        except OSError as exc:
            notes.append((name, f"unreadable: {exc.strerror or exc}"))
            continue
        if summary.problem:
            notes.append((name, f"not a Janus recording ({summary.problem})"))
            continue
        if summary.info is None:
            notes.append((name, "empty: no frame was recorded" if not summary.truncated else "cut short inside its header"))
            continue
        if summary.truncated:
            notes.append((name, f"cut short after {summary.frames} whole frames (convert keeps those)"))
        groups.setdefault(base, Group(base)).files[kind or summary.info.kind] = summary
    for path in others:
        name = path.relative_to(folder).as_posix()
        stem = name.rsplit(".", 1)[0]
        owner = next((g for g in groups.values() if stem == g.base or stem.startswith(g.base + "-")), None)
        if owner is not None and path.suffix in (".webm", ".mp4", ".opus", ".srt"):
            owner.converted.append(path.name)
        else:
            notes.append((name, "not a .mjr recording"))
    ordered = sorted(groups.values(), key=lambda g: (g.started_us or 0, g.base))
    return Listing(ordered, sorted(notes))


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            break
        value /= 1024
    return f"{value:.1f} {unit}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


def _started(us: int | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """The first frame's real time, in UTC."""
    return datetime.fromtimestamp(us / 1e6, UTC).strftime(fmt) if us else ""


def print_listing(folder: Path, listing: Listing, out: TextIO) -> None:
    """A rich table on a terminal; tab-free plain lines (one per recording) otherwise."""
    if out.isatty():
        from rich.console import Console
        from rich.table import Table

        has_converted = any(group.converted for group in listing.groups)
        table = Table(title=f"Recordings in {folder} (times UTC)", title_justify="left")
        table.add_column("base", overflow="fold", ratio=3)
        table.add_column("user → peer", overflow="fold", ratio=1)
        table.add_column("started", no_wrap=True)
        table.add_column("media", no_wrap=True)
        table.add_column("duration", justify="right", no_wrap=True)
        table.add_column("size", justify="right", no_wrap=True)
        if has_converted:
            table.add_column("converted", overflow="fold", ratio=2)
        for group in listing.groups:
            user, peer = group.user_peer
            row = [group.base, f"{user} → {peer}" if user else "", _started(group.started_us, "%Y-%m-%d %H:%M"),
                   "\n".join(group.media()), _duration(group.duration_s), _size(group.size)]
            table.add_row(*row, *(["\n".join(group.converted)] if has_converted else []))
        console = Console(file=out)
        console.print(table)
        for name, note in listing.notes:
            console.print(f"[yellow]{name}[/]: {note}", highlight=False)
        return
    if not listing.groups and not listing.notes:
        print(f"no recordings in {folder}", file=out)
    for group in listing.groups:
        user, peer = group.user_peer
        who = f"user={user} peer={peer} " if user else ""
        converted = f" converted={','.join(group.converted)}" if group.converted else ""
        print(f"{group.base}: {who}started={_started(group.started_us, '%Y-%m-%dT%H:%M:%SZ')} "
              f"media={','.join(group.media())} "
              f"duration={group.duration_s:.1f}s size={group.size}{converted}", file=out)
    for name, note in listing.notes:
        print(f"{name}: {note}", file=out)
