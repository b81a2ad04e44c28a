"""`flexsf bench --plot FILE.png`: the bench's latency distributions against their targets, and its throughput.

Left, one row per measurement: every sample as a dot over its box (quartiles, whiskers to the extremes), the targets
as marks on the row (dashed: p50, dotted: p99), the measured p50/p99 written at the right. Right: lifecycle and bare
workflows per second, with the target ratio (0.8 × bare) as a line. Drawn with matplotlib's Figure directly (no pyplot
state, no display needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# (samples key, label, p50 target ms, p99 target ms): the targets of docs/performance.md; None where none is set.
# `{n}`: how many were accepted together in the run.
ROWS = (
    ("agent_pop", "agent-felt pop\n{n} accepts in 1 s", 50.0, 150.0),
    ("agent_pop_single", "agent-felt pop\none at a time", None, None),
    ("pop_overhead", "server-side pop\n{n} at once", 30.0, 100.0),
    ("pop_overhead_unloaded", "server-side pop\none at a time", None, None),
)
THROUGHPUT_TARGET = 0.8


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def plot_bench(result: dict[str, Any], path: Path) -> Path:
    from matplotlib.figure import Figure

    samples = result.get("samples_ms", {})
    rows = [row for row in ROWS if samples.get(row[0])]
    figure = Figure(figsize=(12, 5.5), layout="constrained")
    latency, throughput = figure.subplots(1, 2, width_ratios=[3, 1])

    for y, (key, _, p50_target, p99_target) in enumerate(rows):
        values = samples[key]
        latency.boxplot(values, positions=[y], orientation="horizontal", widths=0.5, whis=(0, 100))
        spread = [y + 0.18 * ((i * 0.618) % 1 - 0.5) for i in range(len(values))]  # deterministic jitter
        latency.scatter(values, spread, s=9, alpha=0.6, color="tab:blue", zorder=3)
        for target, style in ((p50_target, "--"), (p99_target, ":")):
            if target is not None:
                latency.plot([target, target], [y - 0.35, y + 0.35], linestyle=style, color="tab:red", linewidth=1.5)
        latency.annotate(
            f"p50 {_pct(values, 50):.0f} · p99 {_pct(values, 99):.0f} ms (n={len(values)})",
            xy=(1.0, y),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 12),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )
    together = {"agent_pop": result.get("agent_pop_samples"), "pop_overhead": result.get("pop_concurrent_tasks")}
    latency.set_yticks(range(len(rows)), [row[1].format(n=together.get(row[0]) or "?") for row in rows])
    latency.set_ylim(max(len(rows), 1) - 0.3, -0.7)  # the agent-felt rows on top
    latency.set_xlabel("ms, sandbox time subtracted")
    latency.set_xlim(left=0)
    latency.set_title("Screen pop (red marks: targets, dashed p50, dotted p99)")
    latency.grid(axis="x", alpha=0.3)

    lifecycle = result.get("lifecycle_tasks_per_s")
    bare = result.get("bare_workflows_per_s")
    if lifecycle and bare:
        throughput.bar(["lifecycle", "bare"], [lifecycle, bare], color=["tab:blue", "tab:gray"])
        throughput.axhline(THROUGHPUT_TARGET * bare, color="tab:red", linestyle="--", linewidth=1.5)
        throughput.annotate(
            f"target {THROUGHPUT_TARGET} × bare",
            xy=(1.0, THROUGHPUT_TARGET * bare),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 4),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="tab:red",
        )
        throughput.set_title(f"Throughput: ratio {lifecycle / bare:.2f}")
    else:
        throughput.set_title("Throughput: not measured")
    throughput.set_ylabel("workflows per second")
    figure.suptitle(f"flexsf bench ({result.get('mode', '?')}), {result.get('wall_s', '?')} s")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    return path
