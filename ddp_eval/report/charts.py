"""Bar charts (PNG) of the task's tables; needs matplotlib (pip install 'ddp_eval[plot]'), else none."""

from __future__ import annotations

import logging
from pathlib import Path

from ddp_eval.core.tables import ReportTable
from ddp_eval.store.atomic import replacing

log = logging.getLogger(__name__)


def write_charts(tables: list[ReportTable], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: no charts (pip install 'ddp_eval[plot]')")
        return []
    paths = []
    for table in tables:
        columns = [(i, c) for i, c in enumerate(table.columns) if c.percent]
        if table.chart_title is None or not table.rows or not columns:
            continue
        labels = [label for label, _ in table.rows]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
        height = 0.8 / len(columns)
        for n, (i, column) in enumerate(columns):
            offset = (len(columns) - 1) / 2 * height - n * height
            bars = ax.barh([y + offset for y in range(len(labels))],
                           [(values[i] or 0) * 100 for _, values in table.rows], height=height, label=column.label)
            # Every bar gets its value, so a 0% bar is seen as 0%, not as a missing one.
            ax.bar_label(bars, labels=["n/a" if values[i] is None else f"{values[i] * 100:.1f}%"
                                       for _, values in table.rows], padding=2, fontsize=7)
        if len(columns) > 1:
            ax.legend(loc="lower right")
        ax.set_yticks(list(range(len(labels))), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 112)  # room for the labels of 100% bars
        ax.set_xlabel("accuracy (%)")
        ax.set_title(table.chart_title)
        fig.tight_layout()
        path = out_dir / f"{table.name}.png"
        with replacing(path) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
