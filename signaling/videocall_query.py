"""What the VideoCall plugin tells the Admin API about one handle (``plugin_specific``).

Pure: reads the state machine's tables and returns the section ``handle_info`` shows, in
the keys of Janus's ``janus_videocall_query_session`` (``state``, ``username``, ``peer``,
``audio_active``, ``video_active``, ``bitrate``, ``recording``, ``incall``...). Simulcast
keys are absent, as they are in Janus for a call without simulcast (we relay none yet);
codecs and ``slowlink_count`` are absent because signalling does not know them.

Ours besides Janus's: ``call_id``, ``phase`` and ``leg`` (where the call is in its set-up and
which side this handle is), ``hosted_by`` (the node hosting a call with a user of another node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from signaling.videocall import VideoCall

#: How a recording's file name ends, per medium (``mediarelay.recorder``'s names).
_SUFFIXES = (("-audio.mjr", "audio"), ("-video.mjr", "video"), ("-data.mjr", "data"))


def recording_files(files: Sequence[str]) -> dict[str, str]:
    """A recording's files by medium, as Janus's ``recording`` object shows them."""
    by_kind: dict[str, str] = {}
    for name in files:
        kind = next((kind for suffix, kind in _SUFFIXES if name.endswith(suffix)), None)
        if kind is not None:
            by_kind[kind] = name
    return by_kind


def query_session(plugin: VideoCall, handle: int,
                  recordings: Mapping[tuple[str, str], Sequence[str]] | None = None) -> dict[str, Any] | None:
    """The ``plugin_specific`` section for ``handle``, or None when the plugin does not know it.
    ``recordings``: the files each (call id, leg) records now, as the relay reported them."""
    state = plugin.handles.get(handle)
    if state is None:
        return None
    call = state.call
    info: dict[str, Any] = {"state": "incall" if call is not None else "idle", "username": state.username}
    if call is not None:
        peer = plugin.handles.get(call.peer_of(handle))
        peer_controls = peer.controls if peer is not None else None
        info.update({
            "peer": peer.username if peer is not None else None,
            "audio_active": state.controls.audio,
            "video_active": state.controls.video,
            "bitrate": state.controls.bitrate,
            "peer-bitrate": peer_controls.bitrate if peer_controls is not None else 0,
        })
        files = (recordings or {}).get((call.call_id, call.leg_of(handle)))
        if files:
            info["recording"] = recording_files(files)
        info.update({"call_id": call.call_id, "phase": call.phase, "leg": call.leg_of(handle)})
    if state.away is not None:
        info["hosted_by"] = state.away
    info["incall"] = 1 if call is not None or state.away is not None else 0
    info["hangingup"] = 0
    info["destroyed"] = 0
    return info
