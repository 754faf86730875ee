"""Log lines for people (``text``) or for a log pipeline (``json``), the same in both processes.

``json`` writes one object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``process``, and ``call_id`` on every line about a call. A line is about a call
when its call site says so with ``extra={"call_id": ...}`` (``call_log`` builds that mapping):
no context variable, so a line logged from a callback of another call's task can never carry
the wrong id. A traceback goes in ``exception`` as one string.

Relay workers started by ``videocall serve`` inherit the format through ``VIDEOCALL_LOG_FORMAT``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

#: The ``LogRecord`` attribute a call's lines carry.
CALL_ID = "call_id"

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"


def call_log(call_id: str) -> dict[str, Any]:
    """``extra`` for a log line about ``call_id``: ``log.info(..., extra=call_log(call_id))``."""
    return {CALL_ID: call_id}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        call_id = getattr(record, CALL_ID, None)
        if call_id is not None:
            line[CALL_ID] = str(call_id)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(level: str, log_format: str = "text") -> None:
    """Send the process's logs to stderr at ``level`` in ``log_format`` ("text" or "json");
    like ``logging.basicConfig``, nothing changes if the root logger has handlers already."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    # websockets at DEBUG dumps every frame, clients' apisecret and token included: never below INFO.
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLevelNamesMapping().get(level.upper(), 0)))
