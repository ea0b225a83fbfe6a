"""Drawing speed: wall time of whole `resdsl viz` commands rendering to SVG (issue 4 targets: overview of
resnet1001_preact under 3 s, full view of resnet20 under 10 s). Usage: python benchmarks/viz_speed.py [--record]"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record, time_command  # noqa: E402
CASES = [("specs/resnet1001_preact.res", "overview", 3.0), ("specs/resnet20.res", "full", 10.0),
         ("specs/resnet110.res", "unit", 3.0)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    rows = ["| spec | view | SVG bytes | `resdsl viz` wall, median (s) | target (s) |", "|---|---|---|---|---|"]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for spec, view, target in CASES:
            out = Path(tmp) / f"{view}.svg"
            med = time_command([sys.executable, "-m", "resdsl_cli", "viz", spec, "--view", view, "-o", str(out)],
                               ROOT, args.repeats)
            ok &= med < target
            rows.append(f"| {spec} | {view} | {out.stat().st_size:,} | {med:.3f} | {target:g} |")
    table = "\n".join(rows) + f"\n\n{'targets met' if ok else 'TARGETS MISSED'}; medians of {args.repeats} runs."
    print(table)
    if args.record:
        record("Drawing speed (issue 4)", "python benchmarks/viz_speed.py --record", table)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
