"""CPU time and memory of a server process and its children, read from /proc.

``videocall serve`` is a signalling process with relay worker children; Janus is one process
with threads. Both are measured the same way: utime+stime and VmRSS of the process and every
descendant alive at the time of reading (``/proc/PID/stat`` counts all threads).
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (empty when ``pid`` is gone)."""
    if _stat(pid) is None:
        return []
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in tree(pid):
        fields = _stat(member)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def rss_mb(pid: int, *, children: bool = True) -> float:
    total = 0.0
    for member in tree(pid) if children else [pid]:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
                    break
        except OSError:
            continue
    return total


def alive(pid: int) -> bool:
    return _stat(pid) is not None
