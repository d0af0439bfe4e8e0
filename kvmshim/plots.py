"""Figures as PNG files, with matplotlib's Agg renderer (imported on first use: an optional extra).

Two shapes cover the project's figures: ``heatmap`` (categories over time and guest-physical
address: the dirty demo's pages) and ``bar_chart`` (grouped bars per round or per case, with
optional lines on a second axis: migration rounds, benchmarks). Every figure has units on
its axes, a legend and a title, and uses matplotlib's object API (no pyplot global state).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from .errors import KvmshimError

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

PathLike = str | Path
#: How many address rows a heatmap shows at most: pages are binned to fit.
MAX_ROWS = 512
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


class PlotsUnavailable(KvmshimError, ImportError):
    """matplotlib is not installed."""


def matplotlib() -> SimpleNamespace:
    """The matplotlib pieces the figures use, imported now (Agg only: no display needed)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch, Rectangle
        from matplotlib.ticker import FuncFormatter, MultipleLocator
    except ImportError as err:
        raise PlotsUnavailable("figures need matplotlib: install kvmshim's plots extra "
                               "(pip install -e '.[plots]')") from err
    return SimpleNamespace(Figure=Figure, FigureCanvasAgg=FigureCanvasAgg, Patch=Patch, Rectangle=Rectangle,
                           FuncFormatter=FuncFormatter, MultipleLocator=MultipleLocator)


def format_size(size: int) -> str:
    """1024 -> '1 KiB', 0xb8000 -> '736 KiB', 1.5 GiB -> '1.5 GiB'."""
    power = min(max(0, size.bit_length() - 1) // 10, len(_UNITS) - 1)
    return f"{size / 1024 ** power:.4g} {_UNITS[power]}"


def bin_size(count: int, max_rows: int = MAX_ROWS) -> int:
    """The smallest power of two ``b`` with ``ceil(count / b) <= max_rows``."""
    return 1 << max(0, math.ceil(math.log2(max(1, count) / max_rows)))


def _new_figure(mpl: SimpleNamespace, width: float, height: float) -> tuple[Figure, Axes]:
    figure = mpl.Figure(figsize=(width, height), dpi=100, layout="constrained")
    mpl.FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def heatmap(path: PathLike, cells: ArrayLike, *, categories: Sequence[tuple[str, str]], x_step: float, x_label: str,
            address_start: int, address_step: int, regions: Sequence[tuple[str, int, int]] = (),
            title: str) -> None:
    """Write a heatmap of ``cells`` (rows of category indices: row ``j`` is the addresses from
    ``address_start + j * address_step``, column ``i`` the time from ``i * x_step``), low addresses at
    the bottom, a legend of ``categories`` ((label, colour) for index 0, 1, ...), and ``regions``
    ((name, start, end): the runs of a flat view) named on the right-hand address axis."""
    import numpy as np
    from matplotlib.colors import ListedColormap

    mpl = matplotlib()
    cells = np.asarray(cells)
    rows, columns = cells.shape
    figure, ax = _new_figure(mpl, 10, 6)
    top = address_start + rows * address_step
    ax.imshow(cells, cmap=ListedColormap([colour for _, colour in categories]), vmin=0, vmax=len(categories) - 1,
              origin="lower", aspect="auto", interpolation="nearest",
              extent=(0, columns * x_step, address_start, top))
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"guest-physical address (one row = {format_size(address_step)})")
    span = top - address_start
    ax.yaxis.set_major_locator(mpl.MultipleLocator(1 << max(0, int(math.log2(span / 8)))))
    ax.yaxis.set_major_formatter(mpl.FuncFormatter(lambda y, _: f"{int(y):#x} ({format_size(int(y))})"
                                                   if y > 0 else "0"))
    labels: list[tuple[float, str]] = []
    for name, start, end in regions:
        if start < top and end > address_start:
            if start > address_start:
                ax.axhline(start, color="white", linewidth=0.4, alpha=0.5)
            big = end - start >= span / 20  # a big run is named at its middle, a small one at its start
            labels.append(((max(start, address_start) + min(end, top)) / 2 if big else start, name))
    kept: list[tuple[float, str]] = []
    for position, name in sorted(labels):
        if not kept or position - kept[-1][0] > span / 40:
            kept.append((position, name))
    names = ax.secondary_yaxis("right")
    names.set_yticks([position for position, _ in kept], [name for _, name in kept], fontsize=8)
    names.set_ylabel("region (flat view)")
    ax.legend(handles=[mpl.Patch(facecolor=colour, edgecolor="grey", label=label) for label, colour in categories],
              loc="upper left", bbox_to_anchor=(0, -0.09), ncols=len(categories), frameon=False)
    ax.set_title(title)
    figure.savefig(path)


def bar_chart(path: PathLike, x: Sequence[int | str], bars: Mapping[str, Sequence[float]], *,
              bar_unit: str, lines: Mapping[str, Sequence[float]] = {}, line_unit: str = "",
              x_label: str = "round", title: str) -> None:
    """Write grouped bars (one colour per ``bars`` series, left axis in ``bar_unit``) for each ``x``,
    and optional ``lines`` on a right axis in ``line_unit``: e.g. pages sent and dirty rate per round."""
    mpl = matplotlib()
    figure, ax = _new_figure(mpl, 8, 4.5)
    width = 0.8 / max(1, len(bars))
    positions = range(len(x))
    handles: list[Artist | tuple[Artist, ...]] = []
    for i, (label, values) in enumerate(bars.items()):
        handles.append(ax.bar([p - 0.4 + width * (i + 0.5) for p in positions], values, width, label=label))
    ax.set_xticks(list(positions), [str(v) for v in x])
    ax.set_xlabel(x_label)
    ax.set_ylabel(bar_unit)
    if lines:
        right = ax.twinx()
        for j, (label, values) in enumerate(lines.items()):
            handles += right.plot(list(positions), values, marker="o", color=f"C{len(bars) + j}", label=label)
        right.set_ylabel(line_unit)
        right.set_ylim(bottom=0)
    ax.legend(handles=handles, loc="upper right")
    ax.set_title(title)
    figure.savefig(path)
