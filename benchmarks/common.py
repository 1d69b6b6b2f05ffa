"""Helpers shared by the benchmark scripts (run from the repository root as
``.venv/bin/python benchmarks/<name>.py``, so this folder is on ``sys.path``)."""

from __future__ import annotations

import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def emit(text: str, out: str | None) -> None:
    """Print a results page and, when ``out`` is given, write it there atomically."""
    print(text)
    if out:
        from tmln.atomic import write_text

        write_text(out, text)
