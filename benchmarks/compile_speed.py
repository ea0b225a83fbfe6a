"""Compile speed: parse+resolve+lower+check in-process, and the wall time of a whole `resdsl compile --json`.

Targets (issue 2): under 0.3 s in-process and under 1 s for the whole command, for resnet1202 and
resnet1001_preact. Usage: python benchmarks/compile_speed.py [--record]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record, time_command  # noqa: E402
SPECS = ["specs/resnet1202.res", "specs/resnet1001_preact.res"]


def in_process(spec: str, repeats: int) -> tuple[float, float, int]:
    """(first call in a fresh process, median of later calls, node count) in seconds."""
    code = (
        "import time, statistics, resdsl\n"
        f"t = time.perf_counter(); net = resdsl.compile_spec({spec!r}); first = time.perf_counter() - t\n"
        "times = []\n"
        f"for _ in range({repeats}):\n"
        f"    t = time.perf_counter(); resdsl.compile_spec({spec!r}); times.append(time.perf_counter() - t)\n"
        "print(first, statistics.median(times), net.graph.number_of_nodes())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    first, median, nodes = out.stdout.split()
    return float(first), float(median), int(nodes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--record", action="store_true", help="write the figures to benchmarks/RESULTS.md")
    args = ap.parse_args()
    rows = ["| spec | IR nodes | in-process, first call (s) | in-process, median (s) "
            "| `resdsl compile --json` wall, median (s) |",
            "|---|---|---|---|---|"]
    ok = True
    for spec in SPECS:
        first, median, nodes = in_process(spec, args.repeats)
        wall = time_command([sys.executable, "-m", "resdsl_cli", "compile", spec, "--json"], ROOT, args.repeats)
        ok &= max(first, median) < 0.3 and wall < 1.0
        rows.append(f"| {spec} | {nodes} | {first:.3f} | {median:.3f} | {wall:.3f} |")
    verdict = "targets met (in-process < 0.3 s, whole command < 1 s)" if ok else "TARGETS MISSED"
    table = "\n".join(rows) + f"\n\n{verdict}; medians of {args.repeats} runs."
    print(table)
    if args.record:
        record("Compile speed (issue 2)", "python benchmarks/compile_speed.py --record", table)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
