"""``videocall recordings``: real encoded media written as the relay writes .mjr files, checked
against Janus's own ``janus-pp-rec`` and decoded back with PyAV.

Encoding and decoding a few seconds of video takes a second or more per codec: slow.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.support import mjr_media
from tests.support.janus_tools import PP_REC, needs_pp_rec
from videocall import recording_list

pytestmark = pytest.mark.slow

needs_janus = needs_pp_rec
FIRST_US = 1_733_526_312_000_000
SECONDS = 3.0
EXTENSIONS = {"vp8": ".webm", "vp9": ".webm", "h264": ".mp4", "opus": ".opus"}


def _encoder_missing(codec: str) -> str:
    name = {"vp8": "libvpx", "vp9": "libvpx-vp9", "h264": "libx264", "opus": "libopus"}[codec]
    try:
        av.codec.Codec(name, "w")
    except av.codec.codec.UnknownCodecError:
        return f"this PyAV build has no {name} encoder"
    return ""


def _recording(folder: Path, base: str, codec: str, first_us: int = FIRST_US) -> tuple[Path, mjr_media.Encoded]:
    if reason := _encoder_missing(codec):
        pytest.skip(reason)
    if codec == "opus":
        encoded = mjr_media.encode_opus(SECONDS)
        return mjr_media.write_mjr(folder / f"{base}-audio.mjr", "audio", codec, mjr_media.packets(encoded), first_us), encoded
    encoded = mjr_media.encode_video(codec, SECONDS)
    return mjr_media.write_mjr(folder / f"{base}-video.mjr", "video", codec, mjr_media.packets(encoded), first_us), encoded


def _decoded(path: Path, kind: str) -> tuple[int, float, float]:
    """Frames decoded from the file's ``kind`` stream, its first frame time and its span (s)."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        times = [float(frame.time) for frame in container.decode(stream) if frame.time is not None]
    return len(times), times[0], times[-1] - times[0]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "videocall", "recordings", *args],
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("codec", ["vp8", "vp9", "h264", "opus"])
def test_convert_matches_the_source_and_janus_pp_rec(tmp_path: Path, codec: str) -> None:
    source, encoded = _recording(tmp_path, "call", codec)
    kind = "audio" if codec == "opus" else "video"
    ours = tmp_path / f"call-{kind}{EXTENSIONS[codec]}"

    result = _run("convert", str(source))
    assert result.returncode == 0, result.stderr
    assert f"wrote {ours}" in result.stdout

    count, first, span = _decoded(ours, kind)
    assert count == len(encoded.frames)
    step = 1 / 30 if kind == "video" else 0.02
    assert first == pytest.approx(0, abs=0.001)  # no encoder padding, no offset of its own
    assert span + step == pytest.approx(encoded.seconds, rel=0.03)

    if PP_REC is not None:
        theirs = tmp_path / f"janus{EXTENSIONS[codec]}"
        janus = subprocess.run([PP_REC, str(source), str(theirs)], capture_output=True, text=True, check=False)
        # Our writer is Janus-compatible: exit 0 and no error line.
        assert janus.returncode == 0, janus.stdout + janus.stderr
        assert "[ERR]" not in janus.stdout + janus.stderr
        janus_count, _, janus_span = _decoded(theirs, kind)
        assert count == janus_count
        assert span == pytest.approx(janus_span, rel=0.03, abs=0.01)


def test_base_with_audio_and_video_is_one_file_in_sync(tmp_path: Path) -> None:
    """Video started 0.5 s after audio (its file's ``u``): it starts 0.5 s later in BASE.webm."""
    _, audio = _recording(tmp_path, "videocall-alice-bob-1733526312000000", "opus")
    _, video = _recording(tmp_path, "videocall-alice-bob-1733526312000000", "vp8", FIRST_US + 500_000)

    result = _run("convert", "--dir", str(tmp_path), "videocall-alice-bob-1733526312000000", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    both = tmp_path / "out" / "videocall-alice-bob-1733526312000000.webm"
    assert both.is_file()
    audio_count, audio_first, _ = _decoded(both, "audio")
    video_count, video_first, video_span = _decoded(both, "video")
    assert (audio_count, video_count) == (len(audio.frames), len(video.frames))
    assert video_first - audio_first == pytest.approx(0.5, abs=0.002)
    assert video_span == pytest.approx(SECONDS - 1 / 30, abs=0.01)
    for name in ("-audio.opus", "-video.webm"):
        assert (tmp_path / "out" / f"videocall-alice-bob-1733526312000000{name}").is_file()


def test_h264_and_opus_go_together_in_mp4(tmp_path: Path) -> None:
    _, audio = _recording(tmp_path, "call", "opus", FIRST_US + 250_000)
    _, video = _recording(tmp_path, "call", "h264")

    result = _run("convert", str(tmp_path / "call"))
    assert result.returncode == 0, result.stderr
    audio_count, audio_first, _ = _decoded(tmp_path / "call.mp4", "audio")
    video_count, video_first, _ = _decoded(tmp_path / "call.mp4", "video")
    assert (audio_count, video_count) == (len(audio.frames), len(video.frames))
    assert audio_first - video_first == pytest.approx(0.25, abs=0.002)


def test_data_becomes_subrip_as_janus_pp_rec_writes_it(tmp_path: Path) -> None:
    created = FIRST_US - 2_000_000
    source = mjr_media.write_data_mjr(
        tmp_path / "chat-data.mjr", [(0.0, b"hello"), (1.5, "ça va ?".encode()), (4.25, b"bye")], FIRST_US, created)

    result = _run("convert", str(source))
    assert result.returncode == 0, result.stderr
    ours = (tmp_path / "chat-data.srt").read_text(encoding="utf-8")
    assert ours == (
        "1\n00:00:02,000 --> 00:00:03,499\nhello\n\n"
        "2\n00:00:03,500 --> 00:00:06,249\nça va ?\n\n"
        "3\n00:00:06,250 --> 00:00:11,250\nbye\n\n"
    )
    if PP_REC is not None:
        janus = subprocess.run([PP_REC, str(source), str(tmp_path / "janus.srt")], capture_output=True, check=False)
        assert janus.returncode == 0
        # The same cues; SubRip wants a comma before the milliseconds, pp-srt.c writes a dot.
        assert (tmp_path / "janus.srt").read_text(encoding="utf-8").replace(".", ",").replace("?,", "?.") == ours


def test_truncated_file_converts_its_whole_frames_then_says_so(tmp_path: Path) -> None:
    source, _ = _recording(tmp_path, "cut", "vp8")
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    whole = len(mjr_media.mjr.read(source.read_bytes()).frames)

    result = _run("convert", str(source))
    assert result.returncode == 1
    assert result.stderr.strip() == f"videocall recordings: {source} is cut short: converted its {whole} whole frames"
    assert "Traceback" not in result.stderr
    count, _, _ = _decoded(tmp_path / "cut-video.webm", "video")
    assert 10 < count < 90  # half the bytes: the keyframe is large and libvpx's sizes vary (28 seen)


def test_foreign_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "notes-video.mjr").write_bytes(b"MEETECHO\x00\x05video")
    result = _run("convert", str(tmp_path / "notes-video.mjr"))
    assert result.returncode == 1
    path = tmp_path / "notes-video.mjr"
    assert result.stderr.strip() == f"videocall recordings: {path}: not a Janus recording (no MJR00002 header)"


def test_missing_base_says_where_it_looked_and_exits_2(tmp_path: Path) -> None:
    result = _run("convert", "--dir", str(tmp_path), "nobody")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"videocall recordings: no recording 'nobody': no file nobody-{{audio,video,data}}.mjr in . or {tmp_path}")


def test_list_groups_recordings_and_flags_the_rest(tmp_path: Path) -> None:
    _recording(tmp_path, "videocall-alice-bob-1733526312000000", "opus")
    _recording(tmp_path, "videocall-alice-bob-1733526312000000", "vp8", FIRST_US + 500_000)
    (tmp_path / "sub").mkdir()
    _recording(tmp_path / "sub", "meeting", "h264", FIRST_US + 60_000_000)
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 100)
    (tmp_path / "old-video.mjr").write_bytes(b"MJR00002")

    result = _run("list", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    size = sum(p.stat().st_size for p in tmp_path.glob("videocall-*.mjr"))
    meeting = (tmp_path / "sub" / "meeting-video.mjr").stat().st_size
    assert lines == [
        (f"videocall-alice-bob-1733526312000000: user=alice peer=bob started=2024-12-06T23:05:12Z "
         f"media=audio:opus,video:vp8 duration=3.5s size={size}"),
        f"sub/meeting: started=2024-12-06T23:06:12Z media=video:h264 duration=3.0s size={meeting}",
        "junk.bin: not a .mjr recording",
        "old-video.mjr: empty: no frame was recorded",
    ]


def test_list_reads_the_recordings_dir_setting(tmp_path: Path) -> None:
    _recording(tmp_path, "call", "opus")
    config = tmp_path / "videocall.toml"
    config.write_text(f'recordings_dir = "{tmp_path}"\n')
    result = _run("list", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("call: started=")


def test_help_and_no_heavy_imports() -> None:
    out = _run("--help")
    assert out.returncode == 0 and "convert" in out.stdout and "list" in out.stdout
    code = ("import sys, videocall.recordings\n"
            "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {'aiortc', 'av', 'signaling'})))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
    assert recording_list.MEDIA_SUFFIXES["-video.mjr"] == "video"
