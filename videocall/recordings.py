"""``videocall recordings``: what is in the recordings folder, and ``.mjr`` files made playable.

``list`` groups the folder's ``.mjr`` files by call and says who, what media, how long and
how big (``recording_list.py``).

``convert`` does what ``janus-pp-rec`` does, one file per medium (VP8/VP9 to ``.webm``,
H.264 to ``.mp4``, Opus to ``.opus``, data to ``.srt``), plus the one thing it does not: a
user's audio and video in one file (``<base>.webm`` or ``<base>.mp4``), in sync. Each
file's RTP clock runs from its first packet, and the info header dates that packet (``u``,
real time): a stream that started later starts later in the muxed file. Nothing is
re-encoded (``depacketize.py`` joins the RTP payloads into frames, ``remux.py`` muxes them).

``videocall.cli`` hands every argument after ``recordings`` to ``main``, importing this
module only then; PyAV is imported only by ``convert``, and never aiortc or the server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from mediarelay import mjr
from videocall.recording_list import MEDIA_SUFFIXES, print_listing, scan

if TYPE_CHECKING:
    from videocall.depacketize import Track
    from videocall.remux import Placed

#: Inputs larger than this get a progress bar (when stderr is a terminal).
PROGRESS_BYTES = 8 * 1024 * 1024

EPILOG = """\
examples:
  videocall recordings list                            # the recordings_dir setting (./recordings)
  videocall recordings list --dir /var/lib/videocall/recordings
  videocall recordings convert videocall-alice-bob-1733526312000000
  videocall recordings convert call1 call2 --out converted/
  videocall recordings convert recordings/call1-video.mjr

A BASE is a name in the folder (or a path) to which -audio.mjr, -video.mjr and -data.mjr are
appended; a FILE is one .mjr. For each, convert writes one playable file per medium next to
it (or in --out): BASE-video.webm (VP8/VP9) or .mp4 (H.264), BASE-audio.opus, BASE-data.srt,
and with audio and video both, BASE.webm (or BASE.mp4 for H.264) holding the two in sync.
Nothing is re-encoded. Exit status: 0 when everything converted; 1 when a file was cut short
(what was whole is converted), is not a Janus recording or could not be written; 2 when a
BASE or FILE matches nothing.
"""


class RecordingsError(Exception):
    """A problem with one input, said in one line; the conversion of the others goes on."""


# --- convert ---------------------------------------------------------------------------------


@dataclass
class Source:
    """One ``.mjr`` file read whole."""

    path: Path
    info: mjr.Info
    frames: list[mjr.Frame]
    truncated: bool


@dataclass
class Job:
    """What one BASE or FILE argument asks for: its files by medium, and the output stem."""

    name: str
    files: dict[str, Path]
    stem: str
    single: bool


def find(argument: str, folder: Path) -> Job:
    """A FILE (a path, or a name in the folder) or a BASE; ``LookupError`` says what was tried."""
    given = Path(argument)
    for candidate in dict.fromkeys((given, folder / given)):
        if candidate.is_file():  # any file named is converted, or refused as foreign
            kind = next((k for suffix, k in MEDIA_SUFFIXES.items() if candidate.name.endswith(suffix)), "")
            return Job(argument, {kind or candidate.name: candidate}, candidate.name.removesuffix(".mjr"), True)
    places = list(dict.fromkeys((given.parent, (folder / given).parent)))
    for place in places:
        files = {kind: place / f"{given.name}{suffix}" for suffix, kind in MEDIA_SUFFIXES.items()}
        found = {kind: path for kind, path in files.items() if path.is_file()}
        if found:
            return Job(argument, found, given.name, False)
    if given.suffix == ".mjr":
        raise LookupError(f"no file {argument} (nor {folder / given})")
    where = " or ".join(str(place) for place in places)
    raise LookupError(f"no recording {argument!r}: no file {given.name}-{{audio,video,data}}.mjr in {where}")


def load_source(path: Path) -> Source:
    try:
        recording = mjr.read(path.read_bytes())
    except mjr.MjrError as exc:
        raise RecordingsError(f"{path}: {exc}") from None
    except OSError as exc:
        raise RecordingsError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if recording.info is None:
        raise RecordingsError(f"{path}: empty, no frame was recorded" + (" (cut short)" if recording.truncated else ""))
    return Source(path, recording.info, recording.frames, recording.truncated)


@dataclass
class Output:
    path: Path
    description: str


@dataclass
class Converter:
    """Runs jobs, writing files and one line per result; counts what went wrong."""

    out_dir: Path | None
    report: TextIO
    progress_on: bool
    failed: bool = False

    def problem(self, text: str) -> None:
        self.failed = True
        print(f"videocall recordings: {text}", file=sys.stderr)

    def run(self, job: Job) -> None:
        sources: dict[str, Source] = {}
        for kind, path in job.files.items():
            try:
                sources[kind] = load_source(path)
            except RecordingsError as exc:
                self.problem(str(exc))
        if not sources:
            return
        folder = self.out_dir or next(iter(job.files.values())).parent
        tracks: dict[str, Track] = {}
        for kind, source in sources.items():
            try:
                if source.info.kind == "data":
                    self._write_srt(source, folder / f"{source.path.name[: -len('.mjr')]}.srt")
                else:
                    tracks[kind] = self._media(source, folder)
            except RecordingsError as exc:
                self.problem(str(exc))
        audio = tracks.get("audio")
        video = tracks.get("video")
        if not job.single and audio is not None and video is not None and audio.frames and video.frames:
            self._mux_together(job, sources, audio, video, folder)
        for source in sources.values():
            if source.truncated:
                self.problem(f"{source.path} is cut short: converted its {len(source.frames)} whole frames")

    def _media(self, source: Source, folder: Path) -> Track:
        from videocall import depacketize, remux

        try:
            track = depacketize.track(source.info.codec, (f.packet for f in source.frames))
        except ValueError as exc:
            raise RecordingsError(f"{source.path}: {exc}") from None
        if not track.frames:
            raise RecordingsError(f"{source.path}: no decodable frame ({track.drops.describe() or 'no packets'})")
        _, extension = remux.CONTAINERS[track.codec]
        path = folder / f"{source.path.name[: -len('.mjr')]}{extension}"
        self._write(path, [remux.Placed(track, -track.frames[0].pts)], source.path.stat().st_size)
        return track

    def _mux_together(self, job: Job, sources: dict[str, Source], audio: Track, video: Track, folder: Path) -> None:
        """Both tracks on one timeline: each starts its first-packet real time after the earlier one's."""
        from videocall import remux

        start_us = min(sources["audio"].info.first_frame_us, sources["video"].info.first_frame_us)
        placed = []
        for kind, track in (("audio", audio), ("video", video)):
            delay_us = sources[kind].info.first_frame_us - start_us
            placed.append(remux.Placed(track, delay_us * track.clock_rate // 1_000_000))
        # A packet reordered before the first one written has a negative time: move both up.
        early = min(p.offset + p.track.frames[0].pts for p in placed)
        if early < 0:
            lead_us = -min(
                (p.offset + p.track.frames[0].pts) * 1_000_000 // p.track.clock_rate for p in placed
            )
            placed = [remux.Placed(p.track, p.offset + lead_us * p.track.clock_rate // 1_000_000) for p in placed]
        _, extension = remux.container_for([audio, video])
        size = sum(s.path.stat().st_size for k, s in sources.items() if k != "data")
        self._write(folder / f"{job.stem}{extension}", placed, size)

    def _write(self, path: Path, placed: Sequence[Placed], input_size: int) -> None:
        from videocall import remux

        tracks = [p.track for p in placed]
        shown = self.progress_on and input_size >= PROGRESS_BYTES
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _Bar(path.name, sum(len(t.frames) for t in tracks), shown) as advance:
                remux.mux(path, placed, advance)
        except (OSError, ValueError) as exc:  # av.error.FFmpegError is an OSError or a ValueError
            raise RecordingsError(f"{path}: cannot write it: {exc}") from None
        print(f"wrote {path} ({'; '.join(_describe(t) for t in tracks)})", file=self.report)

    def _write_srt(self, source: Source, path: Path) -> None:
        from videocall import remux

        messages = [((f.real_time_us or 0) - source.info.created_us, f.packet) for f in source.frames]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(remux.srt(messages))
        except OSError as exc:
            raise RecordingsError(f"{path}: cannot write it: {exc.strerror or exc}") from None
        print(f"wrote {path} (data, {len(messages)} messages)", file=self.report)


class _Bar:
    """A rich progress bar for one output file, or nothing (not a terminal, or a short job)."""

    def __init__(self, name: str, total: int, shown: bool) -> None:
        self.name, self.total, self.shown = name, total, shown
        self._progress: object | None = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.shown:
            return lambda _count: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=True)
        progress.start()
        self._progress = progress
        task = progress.add_task(self.name, total=self.total)
        return lambda count: progress.advance(task, count)

    def __exit__(self, *exc: object) -> None:
        from rich.progress import Progress

        if isinstance(self._progress, Progress):
            self._progress.stop()


def _describe(track: Track) -> str:
    seconds = track.duration / track.clock_rate
    kind = "audio" if track.codec == "opus" else "video"
    text = f"{kind} {track.codec}, {len(track.frames)} frames, {seconds:.1f} s"
    dropped = track.drops.describe()
    return f"{text}; left out: {dropped}" if dropped else text


# --- the command -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videocall recordings",
        description="List the recordings folder, and convert Janus .mjr recordings into playable "
        "files (WebM, MP4, Ogg Opus, SubRip) without re-encoding.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the folder's recordings: who, media, duration, size",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert = sub.add_parser("convert", help="BASE or FILE .mjr recordings to .webm/.mp4/.opus/.srt",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    convert.add_argument("inputs", nargs="+", metavar="BASE|FILE", help="a base name or a .mjr file")
    convert.add_argument("--out", metavar="DIR", help="write the files here (default: next to each recording)")
    for action in (listing, convert):
        action.add_argument("--dir", metavar="DIR",
                            help="the recordings folder (default: the recordings_dir setting, ./recordings)")
        action.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings (for recordings_dir)")
    return parser


def _folder(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if args.dir:
        return Path(args.dir)
    from pydantic import ValidationError

    from shared.settings import load

    try:
        return Path(load(args.config).recordings_dir)
    except (ValidationError, ValueError, OSError) as exc:
        parser.error(f"invalid settings: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    folder = _folder(args, parser)
    if args.action == "list":
        if not folder.is_dir():
            print(f"videocall recordings: no folder {folder} (nothing recorded yet?)", file=sys.stderr)
            return 2
        print_listing(folder, scan(folder), sys.stdout)
        return 0
    try:
        jobs = [find(argument, folder) for argument in args.inputs]
    except LookupError as exc:
        print(f"videocall recordings: {exc}", file=sys.stderr)
        return 2
    converter = Converter(Path(args.out) if args.out else None, sys.stdout, sys.stderr.isatty())
    for job in _unique(jobs):
        converter.run(job)
    return 1 if converter.failed else 0


def _unique(jobs: Sequence[Job]) -> Iterator[Job]:
    seen: set[tuple[Path, ...]] = set()
    for job in jobs:
        key = tuple(sorted(job.files.values()))
        if key not in seen:
            seen.add(key)
            yield job
