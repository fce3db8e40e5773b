"""Bar charts (PNG) of the task's tables; needs matplotlib (pip install 'ddp_eval[plot]'), else none."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ddp_eval.core.tables import ReportTable

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
            ax.barh([y + offset for y in range(len(labels))], [(values[i] or 0) * 100 for _, values in table.rows],
                    height=height, label=column.label)
        if len(columns) > 1:
            ax.legend(loc="lower right")
        ax.set_yticks(list(range(len(labels))), labels)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("accuracy (%)")
        ax.set_title(table.chart_title)
        fig.tight_layout()
        path = out_dir / f"{table.name}.png"
        tmp = path.with_name(f".{path.name}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        os.replace(tmp, path)
        paths.append(path)
    return paths
