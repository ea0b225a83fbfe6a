"""Regenerate the golden IR dumps and counts of every spec: `python tests/regen_golden.py` from the repo root.

Review the diff (`git diff tests/golden`) before committing: a changed count is a changed network.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"


def spec_paths() -> list[str]:
    """Every network spec under specs/, as repo-relative paths (recipe-only files excluded)."""
    out = []
    for p in sorted((ROOT / "specs").rglob("*.res")):
        rel = p.relative_to(ROOT).as_posix()
        if p.name != "recipes.res":
            out.append(rel)
    return out


def golden_name(rel: str) -> str:
    return rel.removeprefix("specs/").removesuffix(".res").replace("/", "__") + ".ir.txt"


# specs whose emitted PyTorch source is kept verbatim (one per unit family)
PYTHON_GOLDEN = ["specs/resnet20.res", "specs/torchvision/resnet50.res", "specs/resnet1001_preact.res",
                 "specs/resnet110_exclusive_gate.res", "specs/resnet110_frozen_gate.res",
                 "specs/resnet110_dropout_shortcut.res", "specs/resnet110_relu_preact.res",
                 "specs/resnet164_bn_after_add.res", "specs/resnet110_1layer.res", "specs/plain34.res",
                 "specs/timm/resnet50d.res", "specs/timm/seresnet50.res", "specs/family/wrn28_10.res",
                 "specs/family/resnet110_stochastic_depth.res"]


def python_golden_name(rel: str) -> str:
    return "python/" + rel.removeprefix("specs/").removesuffix(".res").replace("/", "__") + ".py.txt"


def summary(net) -> dict:
    data = net.to_json()
    data.pop("recipe")
    data.pop("spec")
    return data


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import resdsl

    GOLDEN.mkdir(parents=True, exist_ok=True)
    counts = {}
    for rel in spec_paths():
        net = resdsl.compile_spec(rel)
        (GOLDEN / golden_name(rel)).write_text(net.dump_ir())
        counts[rel] = summary(net)
    (GOLDEN / "counts.json").write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
    (GOLDEN / "python").mkdir(exist_ok=True)
    for rel in PYTHON_GOLDEN:
        (GOLDEN / python_golden_name(rel)).write_text(resdsl.emit_python(rel))
    print(f"wrote {len(counts)} IR dumps and counts.json to {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
