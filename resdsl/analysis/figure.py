"""[R] Fig. 7 drawn from measured responses (:mod:`.responses`): each run's label, the figure and the CSV."""
from __future__ import annotations

import csv
import io
import os

from ..shown import csv_safe, literal
from .responses import RunResponses


def labelled(measured: list[RunResponses], labels: list[str] | None = None) -> dict:
    """What :func:`draw_responses` and :func:`write_csv` take: legend label -> responses. A run's label is the
    one given (an experiment's row), else its network's name, with as much of its folder's path as tells it from
    the other runs of that name (``seed-0`` is every experiment row's); '(conv outputs)' marks a run whose responses
    are not taken after BN, so the two kinds are never read alike. Labels are never shared (a run given twice is
    numbered), so no run's curve is lost. Runs measured on other data or numbers of images say theirs."""
    chosen, mixed = [], len({measured_on(m) for m in measured}) > 1
    for k, m in enumerate(measured):
        label = labels[k] if labels else m.network
        namesakes = [o.run for o in measured if o.network == m.network]
        if not labels and len(namesakes) > 1:
            label += f" ({_path_tail(m.run, namesakes)})"
        chosen.append(label + (" (conv outputs)" if m.taken_at == "conv" else "") + (f" [{measured_on(m)}]" * mixed))
    return {(label if chosen.count(label) == 1 else f"{label} #{chosen[:k].count(label) + 1}"): m.responses
            for k, (label, m) in enumerate(zip(chosen, measured))}


def _path_tail(run: str, runs: list[str]) -> str:
    """The fewest last parts of ``run``'s path that no other of ``runs`` ends with."""
    parts = os.path.normpath(run).split(os.sep)
    others = [os.path.normpath(o).split(os.sep) for o in runs if os.path.normpath(o) != os.path.normpath(run)]
    for n in range(1, len(parts) + 1):
        if all(o[-n:] != parts[-n:] for o in others):
            return os.sep.join(parts[-n:])
    return os.path.normpath(run)


def measured_on(m: RunResponses) -> str:
    """'10,000 test images of cifar10' (of an image folder, its folder's name)."""
    return f"{m.images:,} test images" + (f" of {os.path.basename(os.path.normpath(m.data))}" if m.data else "")


def images_words(measured: list[RunResponses]) -> str:
    """The figure's note on what was measured, where every run was measured alike ('10,000 test images of
    cifar10'); else '' (each run's label says its own: :func:`labelled`)."""
    said = {measured_on(m) for m in measured}
    return said.pop() if len(said) == 1 else ""


def draw_responses(results: dict, png_path: str, about: str = "") -> None:
    """:func:`figure_png` written to ``png_path``, a path the user named (atomically; a device or a pipe is written
    through)."""
    from ..train.fileio import write_output

    write_output(png_path, figure_png(results, about))


def figure_png(results: dict, about: str = "") -> bytes:
    """[R] Fig. 7 as PNG bytes: "Top: the layers are shown in their original order. Bottom: the responses are
    ranked in descending order." ``results``: legend label -> ``[(module name, std), ...]``; ``about`` (what was
    measured) joins the title. As in the paper, the std axis starts at 0."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 6.5), dpi=100)
    top, bottom = fig.subplots(2, 1)
    for label, responses in results.items():
        stds = [s for _, s in responses]
        xs = range(1, len(stds) + 1)
        top.plot(xs, stds, "-", marker=".", markersize=3, linewidth=1, label=label)
        bottom.plot(xs, sorted(stds, reverse=True), "-", marker=".", markersize=3, linewidth=1, label=label)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        literal(*ax.legend(fontsize="small").get_texts())
    literal(fig.suptitle("std of the 3x3 layers' responses ([R] Fig. 7)" + (f", {about}" if about else ""),
                         fontsize="medium"))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def csv_text(results: dict) -> str:
    """One row per run and layer: run, layer (1-based, network order), module, std, rank (1 = largest)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["run", "layer", "module", "std", "rank"])
    for label, responses in results.items():
        by_size = sorted(range(len(responses)), key=lambda i: -responses[i][1])
        rank = {i: r for r, i in enumerate(by_size, start=1)}
        for i, (name, std) in enumerate(responses):
            w.writerow([csv_safe(label), i + 1, csv_safe(name), float(std), rank[i]])
    return out.getvalue()


def write_csv(results: dict, csv_path: str) -> None:
    """Write :func:`csv_text` atomically (a device or a pipe is written through)."""
    from ..train.fileio import write_output

    write_output(csv_path, csv_text(results))
