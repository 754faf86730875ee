"""``python -m mediarelay.worker`` that counts every codec aiortc creates in the worker process.

Run by ``tests/mediarelay/test_media.py``: the worker runs inside ``aiortc_hooks.watch_codecs``; when
it exits, the MIME types of the decoders and encoders asked for go to the JSON file named by
``RELAY_CODEC_COUNTS``.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

from mediarelay import aiortc_hooks

created: dict[str, list[str]] = {"decoders": [], "encoders": []}


@atexit.register
def report() -> None:
    with open(os.environ["RELAY_CODEC_COUNTS"], "w") as out:
        json.dump(created, out)


if __name__ == "__main__":
    from mediarelay.worker import main

    with aiortc_hooks.watch_codecs(lambda kind, mime: created[f"{kind}s"].append(mime)):
        code = main()
    sys.exit(code)
