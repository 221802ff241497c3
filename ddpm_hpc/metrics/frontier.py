"""The frontier figure of an eval-sweep table: conditional accuracy against the distance as a multiple of its
real-data floor, one marker per point labelled with its NFE, the preset's default marked, the points that no other
point beats on both axes joined by a line. One panel per distance the table has (classifier FD; FID when scored)."""

from __future__ import annotations

from pathlib import Path

from ..safe_write import save_figure

PANELS = (("classifier_fd", "classifier FD"), ("fid", "FID"))


def _x(row: dict, key: str) -> tuple[float | None, bool]:
    """The ratio to the floor, or the raw distance when there is no floor (False)."""
    if row.get(f"{key}_ratio") is not None:
        return row[f"{key}_ratio"], True
    return row.get(key), False


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both (lower x, higher y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    best, keep = float("-inf"), []
    for i in order:
        if points[i][1] > best:
            keep.append(i)
            best = points[i][1]
    return keep


def frontier_plot(table: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table.get("points", []) if isinstance(r, dict)]
    panels = [(k, t) for k, t in PANELS if any(r.get(k) is not None for r in rows)] or [PANELS[0]]
    conditional = any(r.get("conditional_accuracy") is not None for r in rows)
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.4), dpi=100, squeeze=False)
    samplers = sorted({str(r.get("sample", {}).get("sampler")) for r in rows})
    colours = {s: f"C{i}" for i, s in enumerate(samplers)}
    for ax, (key, title) in zip(axes[0], panels):
        xy, ratio_axis = [], True
        for r in rows:
            x, is_ratio = _x(r, key)
            y = r.get("conditional_accuracy") if conditional else r.get("nfe_per_image")
            if x is None or y is None:
                continue
            ratio_axis &= is_ratio
            xy.append((x, 100 * y if conditional else y, r))
        for s in samplers:
            pts = [(x, y) for x, y, r in xy if str(r.get("sample", {}).get("sampler")) == s]
            if pts:
                ax.scatter(*zip(*pts), color=colours[s], s=36, label=s, zorder=3)
        for x, y, r in xy:
            ax.annotate(f"{r.get('nfe_per_image')}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            if r.get("default"):
                ax.scatter([x], [y], marker="*", s=260, facecolor="none", edgecolor="black", linewidth=1.4,
                           zorder=4, label="the preset's default")
        if conditional and len(xy) > 1:
            front = [xy[i] for i in pareto([(x, y) for x, y, _ in xy])]
            ax.plot([p[0] for p in front], [p[1] for p in front], color="grey", lw=1, ls="--", zorder=2,
                    label="frontier")
        if ratio_axis:
            ax.axvline(1.0, color="green", lw=1, alpha=0.6, label="real-data floor (ratio 1)")
        xs = [x for x, _, _ in xy if x > 0]
        if xs and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{title} / real-data floor at the same N" if ratio_axis else f"{title} (no floor)")
        ax.set_ylabel("conditional accuracy (%)" if conditional else "network evaluations per image")
        ax.set_title(f"{title}: numbers are network evaluations per image", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{table.get('experiment')} step {table.get('step')}: {table.get('n')} images per point",
                 fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
