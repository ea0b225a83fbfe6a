"""Shared helpers of the benchmark scripts: timing whole commands, and recording figures in RESULTS.md."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def record(section: str, command: str, body: str) -> None:
    """Write `## section` with date, machine and command into RESULTS.md, replacing an older copy."""
    text = (RESULTS.read_text() if RESULTS.exists()
            else "# Benchmark results\n\nRecorded by the scripts in benchmarks/.\n")
    block = (f"## {section}\n\n- date: {_dt.date.today().isoformat()}\n- machine: {machine()}\n"
             f"- command: `{command}`\n\n{body.strip()}\n\n")
    pattern = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    RESULTS.write_text(text.rstrip() + "\n")


def time_command(cmd: list[str], cwd, repeats: int) -> float:
    """Median wall time (s) of running ``cmd`` to completion ``repeats`` times; a failure raises."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)
