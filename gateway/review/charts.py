"""A small inline SVG chart (no script, no external file): held messages per category per day."""

from __future__ import annotations

import time

from markupsafe import Markup, escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


def days_back(n: int, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    return [time.strftime("%Y-%m-%d", time.gmtime(now - 86400 * i)) for i in range(n - 1, -1, -1)]


def stacked_bars(per_day: dict[str, dict[str, int]], days: list[str], width: int = 640, height: int = 200) -> Markup:
    categories = sorted({c for counts in per_day.values() for c in counts})
    colours = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}
    peak = max((sum(per_day.get(d, {}).values()) for d in days), default=0) or 1
    left, bottom, top = 30, 30, 10
    plot_h = height - bottom - top
    bar_w = (width - left) / max(len(days), 1)
    total_h = height + 20 * ((len(categories) + 3) // 4)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{total_h}" '
             'role="img" aria-label="Held messages per category per day">',
             f'<text x="0" y="{top + 8}" font-size="10" fill="#555">{peak}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" stroke="#999"/>']
    for i, day in enumerate(days):
        x = left + i * bar_w
        y = height - bottom
        counts = per_day.get(day, {})
        for category in categories:
            n = counts.get(category, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(f'<rect x="{x + 2:.1f}" y="{y:.1f}" width="{max(bar_w - 4, 1):.1f}" height="{h:.1f}" '
                         f'fill="{colours[category]}"><title>{escape(day)} {escape(category)}: {n}</title></rect>')
        if i % max(1, len(days) // 7) == 0:
            parts.append(f'<text x="{x + 2:.1f}" y="{height - bottom + 14}" font-size="10" fill="#555">'
                         f'{escape(day[5:])}</text>')
    for i, category in enumerate(categories):
        lx, ly = left + (i % 4) * 150, height + 4 + 20 * (i // 4)
        parts.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colours[category]}"/>'
                     f'<text x="{lx + 14}" y="{ly + 9}" font-size="11">{escape(category)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
