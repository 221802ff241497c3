"""The images beside a comparison page: the members' loss curves overlaid, and copies of the grids it shows."""

from __future__ import annotations

import math
from pathlib import Path

from ..run_dir import RunDir
from ..safe_write import atomic_write, save_figure


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def loss_overlay(names: list[str], path: Path, best: str | None) -> Path | None:
    """The smoothed loss of every member against step, log scale, in one PNG. None if no member logged any."""
    curves = []
    for name in names:
        records = RunDir(name).read_metrics()
        points = [(r["step"], r["loss_smooth"]) for r in records if _positive(r.get("loss_smooth"))]
        if points:
            curves.append((name, points))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4 + 0.12 * max(0, len(curves) - 10)), dpi=100)
    styles = ("-", "--", ":", "-.")
    for i, (name, points) in enumerate(curves):
        steps, losses = zip(*points)
        ax.plot(steps, losses, styles[(i // 10) % len(styles)], color=f"C{i % 10}",
                linewidth=2.6 if name == best else 1.2, label=f"{name} (best)" if name == best else name)
    ax.set_yscale("log")
    values = [v for _, points in curves for _, v in points]
    if max(values) < 10 * min(values):  # within a decade: plain numbers, not 1.9 x 10^0
        from matplotlib.ticker import FuncFormatter

        plain = FuncFormatter(lambda v, _pos: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("step")
    ax.set_ylabel("smoothed MSE loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return save_figure(fig, path, bbox_inches="tight")


def copy_grids(picks: dict[str, dict], out_dir: Path, sub: str) -> dict[str, str]:
    """Copies of the chosen grids in ``out_dir/grids/`` (the page then needs no other folder); drops stale ones."""
    folder = out_dir / sub
    folder.mkdir(parents=True, exist_ok=True)
    rel = {}
    for name, s in picks.items():
        src = RunDir(name).samples / f"{s['tag']}.png"
        dst = folder / f"{name}--{s['tag']}.png"
        try:
            if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
                atomic_write(dst, src.read_bytes())
        except OSError:
            continue  # removed while we looked: shown as missing
        rel[name] = f"{sub}/{dst.name}"
    keep = {Path(r).name for r in rel.values()}
    for old in folder.glob("*.png"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return rel
