"""Janus's own post-processor, ``janus-pp-rec`` (Debian package janus-tools), which the
recording tests use to prove our ``.mjr`` files are Janus's.

Missing, the tests that need it are skipped with the install hint, except in CI
(``CI=true``), where they run and fail: CI must never pass by skipping them.
"""

from __future__ import annotations

import os
import shutil

import pytest

PP_REC = shutil.which("janus-pp-rec")
HINT = "janus-pp-rec is not installed: apt-get install -y janus-tools"
IN_CI = os.environ.get("CI") == "true"

#: Marks a test that runs janus-pp-rec.
needs_pp_rec = pytest.mark.skipif(PP_REC is None and not IN_CI, reason=HINT)


def pp_rec() -> str:
    """The janus-pp-rec command, or skip (fail in CI) with the hint."""
    if PP_REC is None:
        if IN_CI:
            pytest.fail(HINT, pytrace=False)
        pytest.skip(HINT)
    return PP_REC
