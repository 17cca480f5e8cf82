"""Grid placement: rows and panels on Grafana's 24-column grid, with fixed ids so the output is byte-stable."""

from __future__ import annotations

from collections.abc import Sequence

from otel_trading.tooling.dashboard.grafana_model import Json, row

__all__ = ["GRID_WIDTH", "PANEL_HEIGHT", "layout"]

GRID_WIDTH = 24
PANEL_HEIGHT = 8


def layout(sections: Sequence[tuple[str, list[Json]]]) -> list[Json]:
    """Rows and panels with fixed ids and a two-column grid (stat panels narrower)."""
    out: list[Json] = []
    next_id = 1
    y = 0
    for title, panels in sections:
        header = row(title)
        header["id"] = next_id
        header["gridPos"] = {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}
        out.append(header)
        next_id += 1
        y += 1
        x = 0
        for panel in panels:
            width = 8 if panel["type"] == "stat" else 16 if panel["type"] == "state-timeline" else 12
            if x + width > GRID_WIDTH:
                x = 0
                y += PANEL_HEIGHT
            placed = {"id": next_id, "gridPos": {"h": PANEL_HEIGHT, "w": width, "x": x, "y": y}}
            placed.update(panel)
            out.append(placed)
            next_id += 1
            x += width
        y += PANEL_HEIGHT
    return out
