"""GPU training benchmark (issue 10): how fast `resdsl train` trains on one GPU, against the issue's goals.

On a machine with one CUDA GPU, from the repository root, with resdsl installed (`pip install -e '.[train]'`, or
offline `pip install --no-deps --no-build-isolation -e .`) and Fashion-MNIST's four IDX .gz files in DIR:

    python benchmarks/gpu_train.py --data-dir DIR --record       # about 8-10 minutes on an H100

It records into benchmarks/RESULTS.md after every part (a run stopped by a time limit keeps what it measured);
to split it, `--only train,graph --record`, then `--only seeds,jpeg --record` (each records its own section).
Without --data-dir resdsl finds Fashion-MNIST itself (Debian's package, ~/.cache/resdsl/data); nothing is
downloaded. Smoke test anywhere: `--quick --device cpu` (ResNet-20 only, batch 8, 16 JPEGs at crop 32; figures
meaningless, --record refuses them). What cannot run is reported as "not measured: <why>".

 train  ResNet-20/56/110 on Fashion-MNIST, batch 128, via `resdsl train`: the default loop (the fast path: one CUDA
        graph per iteration) and the plain loop (--sync-every-step: eager, reading the loss each step), each in fp32
        (--amp none; PyTorch's default lets cuDNN run fp32 convolutions on TF32 tensor cores, as a user's run
        does) and with --amp bf16 --channels-last. A run whose train.log says a capture failed is not measured:
        it stepped eagerly, so its figure is not the default loop's. One run per configuration of 4.5*E iterations with
        --eval-every E: metrics.jsonl rows at E, 2E, 3E, 4E, 4.5E, whose `seconds` (since the loop began, taken after
        each evaluation) make each interval L iterations + one evaluation + one checkpoint: d = L*t + c. The first
        two intervals are dropped (cuDNN autotuning, clock warm-up; the first curves.png, TensorBoard event and
        checkpoint import matplotlib and more); a least-squares line through the others (L = E, E, E/2) gives t, one
        iteration, and c, one evaluation with its checkpoint and records. images/s = batch / t. The 64k estimate
        extrapolates the measured run: its wall time (process start to exit) + (64000 - iterations) * t +
        (137 - evaluations) * c, 137 being the evaluations and checkpoints of a default 64k run (one per epoch). Run
        folders are on /dev/shm when it has 4 GiB free: a disk's fsync stalls would blur single intervals (so c holds
        no disk time). A short warm-up run goes first.
 seeds  `resdsl train resnet20 --seeds 0-4` (default loop and precision: bf16+CL on CUDA), once with
        --seed-runs processes and once with --seed-runs threads (one process, a CUDA stream per run), beside
        one run of the same length, each seed timed as above while all five share the GPU; the five-seed 64k
        estimate is the whole command's wall time plus the extrapolation of its slowest seed; the goal takes
        the faster way.
 jpeg   ResNet-50 (`resnet50`, [R]'s v1) from an ImageNet-layout folder of generated JPEGs (make_jpeg_folder.py:
        --jpegs (20,000) train + 1,000 val images, 500x375, ~100 KB, made once into --jpeg-dir) via `resdsl train
        resnet50 --data FOLDER --workers N --amp bf16 --channels-last` (batch 256, the recipe's scale/crop 224/
        flip/colour augmentation, --lr 0.01 as the labels are random), with --decode device (the default on
        CUDA: workers read the files, nvJPEG decodes each batch on the GPU, the crops are cut there), eager and
        with --compile (fewer launches for the host thread that also makes the batches), and with --decode
        workers (decoded and cut in the workers). Timed as `train` with E = one epoch (the training workers live
        for the whole run; each evaluation starts its own, which goes into c); images/s = 256 / t; the goal
        takes the faster --decode device run and names its flags. Beside them the model alone on synthetic
        tensors, bf16 + channels_last, eager and torch.compile'd (backend_speed.py's training_throughput
        method). --quick leaves out both torch.compile runs.
 seeds64k (only with --only; about 6 minutes on an H100: give --timeout 590) `resdsl train resnet20 --seeds 0-4`
        through the whole recipe (64k iterations each, an evaluation and checkpoint an epoch), as a user runs it:
        the five-seed goal measured rather than extrapolated, with each seed's final test error.
 graph  The whole-step CUDA-graph floor: resdsl.build_model(name, num_classes=10, in_channels=1, input_size=(28,
        28)), SGD (momentum 0.9, weight decay 1e-4, foreach; capturable where PyTorch offers it), cross-entropy;
        forward+backward+step captured in one torch.cuda.graph by PyTorch's whole-network recipe (warm-up on a
        side stream, static input and target, zero_grad(set_to_none=True) before capture, autocast with
        cache_enabled=False), replayed and timed with CUDA events (median of 3 x 200 replays); fp32 and bf16 +
        channels_last, batch 128, beside the trainer's t. Runs last, so a failed capture harms no other part.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gpu_runs import (FULL, QUICK_BATCH, QUICK_EVERY, NotMeasured, can_train, fmnist, measure, rate, run,  # noqa: E402
                       train)

PARTS = ("train", "seeds", "jpeg", "graph")
EXTRA_PARTS = ("seeds64k",)  # only when named in --only: it takes minutes
NETS = (("resnet20", 500), ("resnet56", 250), ("resnet110", 160))  # network, evaluation interval E (iterations)
LOOPS = (("default", []), ("plain", ["--sync-every-step"]))
PRECISIONS = (("fp32", ["--amp", "none"]), ("bf16+CL", ["--amp", "bf16", "--channels-last"]))  # explicit: on CUDA
# the default (--amp auto) is bf16+CL, so a run without flags is not fp32
JPEG_SIZE = (500, 375)
QUICK_JPEG = (16, 4, 2, 4)  # train images, val images, classes, batch (2 made BatchNorm of layer4 diverge in bf16)
JPEG_WAYS = (("device", []), ("device", ["--compile"]), ("workers", []))  # --decode, other flags
QUICK_CROP = ["--set", "augment=scale 32-40 crop 32, flip, color"]  # --quick only: a CPU cannot do 224 in minutes
GOALS = {"r20": 3.5, "r110": 17, "seeds": 5, "floor": 1.15, "jpeg": 3000}  # minutes, minutes, minutes, ratio, img/s


def part_train(args, res: dict) -> list[str]:
    lines = ["| network | loop | precision | ms/iter | images/s | eval + checkpoint (s) | run: iterations, wall (s) "
             "| 64k estimate (min) |", "|---|---|---|---|---|---|---|---|"]
    for net, every in NETS:
        for loop, lflags in [(name, flags) for name, flags in LOOPS if name in args.loops]:
            for prec, pflags in PRECISIONS:
                try:
                    if (net, every) not in args.nets:
                        raise NotMeasured("--quick trains resnet20 only")
                    wall, out, iters = train(net, args, f"{net}-{loop}-{prec}", QUICK_EVERY if args.quick else every,
                                             fmnist(args) + lflags + pflags)
                    res[net, loop, prec] = m = measure(out, wall, iters)
                    lines.append(f"| {net} | {loop} | {prec} | {m['t'] * 1e3:.2f} | {rate(args.batch / m['t'])} "
                                 f"| {m['c']:.3f} | {iters}, {wall:.1f} | {m['est'] / 60:.2f} |")
                except NotMeasured as exc:
                    res[net, loop, prec] = str(exc)
                    lines.append(f"| {net} | {loop} | {prec} | not measured: {exc} | | | | |")
                print(lines[-1], flush=True)
    return lines


def part_seeds(args, res: dict) -> list[str]:
    every = QUICK_EVERY if args.quick else NETS[0][1]
    lines = ["| runs of resnet20 (default loop and precision) | iterations each | wall (s) | 64k estimate (min) |",
             "|---|---|---|---|"]
    try:
        wall, out, iters = train("resnet20", args, "seeds-one", every, fmnist(args))
        res["seeds-one"] = one = measure(out, wall, iters)
        lines.append(f"| one (seed 0) | {iters} | {wall:.1f} | {one['est'] / 60:.2f} |")
        notes = []
        for how in ("processes", "threads"):
            wall, out, iters = train("resnet20", args, f"seeds-five-{how}", every,
                                     fmnist(args) + ["--seed-runs", how], seeds=5)
            per = [measure(out / f"seed-{s}", wall, iters) for s in range(5)]
            five = {"wall": wall, "est": max(m["est"] for m in per), "t": [m["t"] for m in per], "how": how}
            if not isinstance(res.get("seeds-five"), dict) or five["est"] < res["seeds-five"]["est"]:
                res["seeds-five"] = five  # the goal is met by the faster way
            lines.append(f"| five at once (seeds 0-4), `--seed-runs {how}` | {iters} | {wall:.1f} | "
                         f"{five['est'] / 60:.2f} |")
            notes.append(f"With `--seed-runs {how}` a seed's iteration took {min(five['t']) * 1e3:.2f}-"
                         f"{max(five['t']) * 1e3:.2f} ms (alone: {one['t'] * 1e3:.2f} ms); five at once took "
                         f"{wall / one['wall']:.2f}x one run's wall time, {five['est'] / one['est']:.2f}x at 64k.")
        lines.append("\n" + "\n".join(notes))
    except NotMeasured as exc:
        res.setdefault("seeds-one", str(exc))
        if not isinstance(res.get("seeds-five"), dict):
            res["seeds-five"] = str(exc)
        lines.append(f"| not measured: {exc} | | | |")
    return lines


def part_seeds64k(args, res: dict) -> list[str]:
    """Five seeds through the whole recipe in one command: the goal measured, not extrapolated."""
    lines = ["| `resdsl train resnet20 --seeds 0-4`, the whole recipe (default loop, precision and --seed-runs) "
             "| iterations each | wall (min) | final test error (%), seeds 0-4 |", "|---|---|---|---|"]
    try:
        out = args.work / "seeds64k"
        cmd = [sys.executable, "-m", "resdsl_cli", "train", "resnet20", "--device", args.device, "--quiet",
               "--out", str(out), "--seeds", "0-4", *fmnist(args), *(["--iters", "8"] if args.quick else [])]
        print("  seeds64k: the whole recipe, five seeds ...", flush=True)
        wall = run(cmd, args.work / "seeds64k.log", args.timeout)
        last = [json.loads((out / f"seed-{s}" / "metrics.jsonl").read_text().splitlines()[-1]) for s in range(5)]
    except (NotMeasured, OSError, ValueError, IndexError) as exc:
        res["seeds-64k"] = str(exc)
        return lines + [f"| not measured: {exc} | | | |"]
    iters = {row["iter"] for row in last}
    res["seeds-64k"] = wall / 60 if iters == {FULL} or args.quick else f"the runs stopped at {sorted(iters)}"
    errors = ", ".join(f"{row['test_error']:.2f}" for row in last)
    return lines + [f"| five at once | {', '.join(f'{i:,}' for i in sorted(iters))} | {wall / 60:.2f} | {errors} |"]


def part_jpeg(args, res: dict) -> list[str]:
    from _gpu_floor import model_only
    from make_jpeg_folder import make_folder

    n_train, n_val, classes, batch = QUICK_JPEG if args.quick else (args.jpegs, 1000, 100, 256)
    lines = [f"| ResNet-50, bf16 + channels_last, batch {batch} | images/s | ms/iter |", "|---|---|---|"]
    try:
        can_train(args)
        folder = Path(args.jpeg_dir) / f"{n_train}-{n_val}-{classes}-{JPEG_SIZE[0]}x{JPEG_SIZE[1]}"
        print(f"  JPEG folder {folder} ...", flush=True)
        info = make_folder(folder, n_train, n_val, classes, JPEG_SIZE)
        if n_train // batch < 2:
            raise NotMeasured(f"{n_train} images make fewer than 2 iterations an epoch at batch {batch}")
    except NotMeasured as exc:
        res["jpeg"] = str(exc)
        return lines + [f"| `resdsl train` from JPEGs | not measured: {exc} | |"]
    for decode, flags in JPEG_WAYS[::2] if args.quick else JPEG_WAYS:  # --quick: a CPU compiles for minutes
        way = f"`--decode {decode}{''.join(' ' + f for f in flags)}`"
        extra = ["--data", str(folder), "--workers", str(args.workers), "--amp", "bf16", "--channels-last",
                 "--lr", "0.01", "--decode", decode, *flags]  # random labels: a lower rate keeps the loss finite
        try:
            wall, out, iters = train("resnet50", args, f"resnet50-jpeg-{decode}{''.join(flags)}", n_train // batch,
                                     extra + (["--batch-size", str(batch)] + QUICK_CROP if args.quick else []))
            m = measure(out, wall, iters)
        except NotMeasured as exc:
            lines.append(f"| `resdsl train` from JPEGs, {way} | not measured: {exc} | |")
            continue
        if decode == "device" and batch / m["t"] > res.get("jpeg", 0.0):  # the goal: the faster --decode device run
            res["jpeg"], res["jpeg-way"] = batch / m["t"], way
        lines.append(f"| `resdsl train` from {n_train:,} JPEGs ({JPEG_SIZE[0]}x{JPEG_SIZE[1]}, mean "
                     f"{info['mean_bytes'] / 1000:.0f} KB), {args.workers} workers, {way} | "
                     f"{rate(batch / m['t'])} | {m['t'] * 1e3:.1f} |")
        print(lines[-1], flush=True)
    res.setdefault("jpeg", "no --decode device run was measured")
    for compiled in (False,) if args.quick else (False, True):
        what = "model only, synthetic tensors" + (", torch.compile" if compiled else "")
        try:
            can_train(args)
            ips = model_only(classes, batch, 3 if args.quick else 30, args.device, 32 if args.quick else 224, compiled)
        except Exception as exc:  # noqa: BLE001 - out of memory, say: a finding, not a crash
            lines.append(f"| {what} | not measured: {type(exc).__name__}: {exc} | |")
            continue
        lines.append(f"| {what} | {rate(ips)} | {batch / ips * 1e3:.1f} |")
        if not compiled and isinstance(res["jpeg"], float):
            res["jpeg-model"] = ips
    if isinstance(res.get("jpeg-model"), float):
        lines.append(f"\nThe trainer from JPEGs ({res['jpeg-way']}) reaches {res['jpeg'] / res['jpeg-model']:.0%} of "
                     f"the eager model-only rate.")
    return lines


def _against(m, floor: float) -> str:
    return f"{m['t'] * 1e3:.2f} ({m['t'] / floor:.2f}x)" if isinstance(m, dict) else "-"


def part_graph(args, res: dict) -> list[str]:
    from _gpu_floor import graph_step_time

    lines = ["| network | precision | CUDA-graph step (ms) | images/s | trainer, default loop: ms (x floor) "
             "| trainer, plain loop: ms (x floor) |", "|---|---|---|---|---|---|"]
    for net, _ in args.nets:
        for prec, _ in PRECISIONS:
            try:
                if args.device != "cuda" or not torch.cuda.is_available():
                    raise NotMeasured("no CUDA (a CUDA graph needs a GPU)")
                floor = graph_step_time(net, args.batch, prec != "fp32", 20 if args.quick else 200)
                res["graph", net, prec] = floor
                lines.append(f"| {net} | {prec} | {floor * 1e3:.3f} | {rate(args.batch / floor)} | "
                             f"{_against(res.get((net, 'default', prec)), floor)} | "
                             f"{_against(res.get((net, 'plain', prec)), floor)} |")
            except Exception as exc:  # noqa: BLE001 - a capture that fails is a finding, not a crash
                why = str(exc) if isinstance(exc, NotMeasured) else \
                    f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
                res["graph", net, prec] = why
                lines.append(f"| {net} | {prec} | not measured: {why} | | | |")
            print(lines[-1], flush=True)
    return lines


def goal_rows(res: dict, done: list[str], parts: list[str]) -> list[str]:
    """The issue's goals that this run's parts measure: measured (or why not), and met."""
    def row(goal, target, value, needs, ok, unit):
        if needs[-1] not in parts:
            return None
        missing = [p for p in needs if p not in done]
        value = f"needs part {missing[0]} in the same run" if set(missing) - set(parts) else \
            f"part {missing[0]} not run yet" if missing else value
        if not isinstance(value, float):
            return f"| {goal} | {target} | not measured: {value} | - |"
        return f"| {goal} | {target} | {value:,.2f} {unit} | {'yes' if ok(value) else 'no'} |"

    def minutes(key):
        m = res.get(key, "not run")
        return m["est"] / 60 if isinstance(m, dict) else m

    rows = []
    for net, goal in (("resnet20", GOALS["r20"]), ("resnet110", GOALS["r110"])):
        for prec, _ in PRECISIONS:
            rows.append(row(f"{net}, 64k iterations, default loop, {prec}", f"<= {goal:g} min",
                            minutes((net, "default", prec)), ["train"], lambda v, g=goal: v <= g, "min"))
    rows.append(row("five resnet20 seeds at once, 64k each, default precision", f"<= {GOALS['seeds']:g} min",
                    minutes("seeds-five"), ["seeds"], lambda v: v <= GOALS["seeds"], "min"))
    rows.append(row("five resnet20 seeds at once, 64k each, measured whole", f"<= {GOALS['seeds']:g} min",
                    res.get("seeds-64k", "not run"), ["seeds64k"], lambda v: v <= GOALS["seeds"], "min"))
    for net, _ in NETS:
        for prec, _ in PRECISIONS:
            m, floor = res.get((net, "default", prec), "not run"), res.get(("graph", net, prec), "not run")
            value = m if isinstance(m, str) else floor if isinstance(floor, str) else m["t"] / floor
            rows.append(row(f"{net} trainer step (default loop) / CUDA-graph floor, {prec}",
                            f"<= {GOALS['floor']:.2f}x", value, ["train", "graph"], lambda v: v <= GOALS["floor"], "x"))
    way = res.get("jpeg-way", "`--decode device`")
    rows.append(row(f"resnet50 from JPEGs, bf16 + channels_last, {way}", f">= {GOALS['jpeg']:,} img/s",
                    res.get("jpeg", "not run"), ["jpeg"], lambda v: v >= GOALS["jpeg"], "img/s"))
    return ["| goal | target | measured | met |", "|---|---|---|---|"] + [r for r in rows if r]


def work_root() -> str | None:
    """/dev/shm when it has room: a disk's fsync stalls at checkpoints would blur the timing of intervals."""
    shm = "/dev/shm"
    roomy = os.access(shm, os.W_OK) and os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize > 4 * 2**30
    return shm if roomy else None


def device_words(device: str) -> str:
    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{device} (no GPU), torch {torch.__version__}"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX files (default: where resdsl finds them)")
    ap.add_argument("--jpeg-dir", default="~/.cache/resdsl/bench-jpegs", help="cache of generated JPEG folders")
    ap.add_argument("--jpegs", type=int, default=20000, help="training JPEGs to generate (the issue: >= 20,000)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 4, help="DataLoader workers for the JPEGs")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    ap.add_argument("--loops", default="default,plain", help="the train part's loops: default, plain, or both")
    ap.add_argument("--quick", action="store_true", help="tiny runs: a smoke test of this script, e.g. on a CPU")
    ap.add_argument("--timeout", type=float, default=480, help="time limit of each `resdsl train` run (s)")
    ap.add_argument("--record", action="store_true", help="record the figures in benchmarks/RESULTS.md")
    args = ap.parse_args()
    args.data_dir = os.path.abspath(os.path.expanduser(args.data_dir)) if args.data_dir else None
    args.jpeg_dir = os.path.abspath(os.path.expanduser(args.jpeg_dir))
    args.batch, args.nets = (QUICK_BATCH, NETS[:1]) if args.quick else (128, NETS)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS + EXTRA_PARTS]
    if bad or not args.parts:
        ap.error(f"--only: unknown part {', '.join(bad) or '(none)'}; choose from {', '.join(PARTS + EXTRA_PARTS)}")
    if args.record and (args.quick or args.device != "cuda"):
        ap.error("--record keeps GPU figures only; a --quick or --device cpu run is a smoke test")
    return args


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the running trainer too (see run)
    parts, done, res, began = [p for p in PARTS + EXTRA_PARTS if p in args.parts], [], {}, time.perf_counter()
    sections = [f"Device: {device_words(args.device)}." + (" QUICK smoke run: tiny batches and runs, figures not "
                                                           "comparable with the goals." if args.quick else "")]
    print(sections[0], flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_train-", dir=work_root()) as tmp:
        args.work, args.warm = Path(tmp), False
        print(f"run folders in {tmp}", flush=True)
        for part in parts:
            print(f"== {part}", flush=True)
            try:
                sections.append("\n".join(globals()[f"part_{part}"](args, res)))
            except Exception as exc:  # noqa: BLE001 - the other parts still run
                traceback.print_exc()
                sections.append(f"Part {part}: not measured: it failed with {type(exc).__name__}: {exc}")
            done.append(part)
            print(sections[-1] + "\n", flush=True)
            goals, minutes = "\n".join(goal_rows(res, done, parts)), (time.perf_counter() - began) / 60
            if args.record:  # after every part: a run stopped by a time limit keeps what it measured
                from _record import record

                name = "GPU training" + ("" if parts == list(PARTS) else f": {', '.join(parts)}") + " (issue 10)"
                state = "" if done == parts else f" Parts done so far: {', '.join(done)} of {', '.join(parts)}."
                record(name, "python benchmarks/gpu_train.py " + " ".join(map(shlex.quote, sys.argv[1:])),
                       "\n\n".join(sections + [goals, f"How each figure is measured: the docstring of "
                                                      f"benchmarks/gpu_train.py. {minutes:.1f} min.{state}"]))
    print(f"== goals\n{goals}\n\nwhole benchmark: {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
