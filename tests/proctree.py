"""Reading a process tree from Linux ``/proc`` (tests of ``xaudit serve`` and
``bench/abuse.py``): psutil would do it too, but it is not a dependency of the service
and these three reads are all that is needed."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (serve restarts workers from a thread)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def cmdline(pid: int) -> str:
    """The command line of ``pid``, words joined by spaces ("" once it has gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def memory(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of ``pid`` in bytes ({} once it has gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out
