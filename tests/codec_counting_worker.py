"""``python -m mediarelay.worker`` that counts every codec aiortc creates in the worker process.

Run by ``test_mediarelay_media.py``: aiortc's ``get_decoder`` and ``get_encoder`` (looked up by
its receivers and senders where they create a codec) are wrapped before the worker starts;
when the worker exits, the MIME types asked for go to the JSON file named by
``RELAY_CODEC_COUNTS``.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender

created: dict[str, list[str]] = {"decoders": [], "encoders": []}


def counting(kind: str, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def make(codec: Any) -> Any:
        created[kind].append(codec.mimeType)
        return original(codec)
    return make


aiortc.codecs.get_decoder = aiortc.rtcrtpreceiver.get_decoder = counting("decoders", aiortc.codecs.get_decoder)
aiortc.codecs.get_encoder = aiortc.rtcrtpsender.get_encoder = counting("encoders", aiortc.codecs.get_encoder)


@atexit.register
def report() -> None:
    with open(os.environ["RELAY_CODEC_COUNTS"], "w") as out:
        json.dump(created, out)


if __name__ == "__main__":
    from mediarelay.worker import main

    sys.exit(main())
