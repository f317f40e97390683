"""The overview's trend chart as geometry for an inline SVG, drawn on the server.

Pure: (time, open findings) points in, coordinates and axis labels out; the template writes the
SVG elements (escaped like everything else), so the page needs no script and no chart library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 12, 28  # room for the axis labels


@dataclass(frozen=True, slots=True)
class Tick:
    at: float  # x or y in the chart's coordinates
    label: str
    anchor: str = "middle"  # an x label's text-anchor: the end ones stay inside the box


@dataclass(frozen=True, slots=True)
class TrendChart:
    days: int
    width: int
    height: int
    points: str  # the polyline's "x,y x,y ..."
    dots: tuple[tuple[float, float, str], ...]  # x, y and a tooltip per tick
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    latest: int | None  # the newest tick's count, None without ticks
    baseline: float  # y of zero

    @property
    def empty(self) -> bool:
        return not self.dots


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 times 10^n at or above `value` (at least 1): round axis labels."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return max(1, step * factor)
        step *= 10


def trend_chart(series: Sequence[tuple[datetime, int]], *, now: datetime, days: int) -> TrendChart:
    """The chart of `series` over the `days` before `now` (older points are left out)."""
    start = now - timedelta(days=days)
    shown = [(at, n) for at, n in series if start <= at <= now]
    top = nice_ceiling(max((n for _, n in shown), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = (now - start).total_seconds()

    def x(at: datetime) -> float:
        return round(LEFT + plot_w * (at - start).total_seconds() / span, 1)

    def y(n: float) -> float:
        return round(TOP + plot_h * (1 - n / top), 1)

    dots = tuple((x(at), y(n), f"{at:%Y-%m-%d %H:%M} UTC: {n} open") for at, n in shown)
    steps = divisions(top)
    y_ticks = tuple(Tick(y(top * i / steps), str(top * i // steps)) for i in range(steps + 1))
    x_ticks = tuple(
        Tick(x(at), f"{at:%b %d}", "start" if i == 0 else "end" if i == 5 else "middle")
        for i in range(6)
        for at in [start + timedelta(days=days * i / 5)]
    )
    return TrendChart(
        days=days,
        width=WIDTH,
        height=HEIGHT,
        points=" ".join(f"{dx},{dy}" for dx, dy, _ in dots),
        dots=dots,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        latest=shown[-1][1] if shown else None,
        baseline=y(0),
    )


def divisions(top: int) -> int:
    """Gridlines that land on whole numbers: 1 and 2 by one, 2 times 10^n in 4, else 5."""
    if top <= 2:
        return top
    return 4 if str(top).startswith("2") else 5
