"""Small inline SVG charts for the pages (no JavaScript, no files): lines over dates and bars of a distribution."""

from __future__ import annotations

from html import escape

from markupsafe import Markup

W, H, PAD = 520, 160, 34


def _frame(body: str, title: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#999"/>'
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>{body}</svg>'
    )


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def line(points: list[tuple[str, float | None]], title: str, mark_x: float | None = None, mark_label: str = "") -> Markup:
    """A line through (label, value) points in order; None values leave a gap. ``mark_x``: a vertical marker at that value."""
    known = [v for _, v in points if v is not None]
    if not known:
        return Markup(f'<p class="muted">no values to chart for {escape(title)}</p>')
    low, high = min(known), max(known)
    if high == low:
        low, high = low - 1, high + 1
    n = max(len(points) - 1, 1)

    def x(i):
        return PAD + (W - PAD - 12) * i / n

    def y(v):
        return H - PAD - (H - PAD - 14) * (v - low) / (high - low)

    parts, run = [], []
    for i, (_label, value) in enumerate(points):
        if value is None:
            if run:
                parts.append(run)
            run = []
            continue
        run.append(f"{x(i):.1f},{y(value):.1f}")
    if run:
        parts.append(run)
    body = "".join(f'<polyline fill="none" stroke="#2a6fdb" stroke-width="2" points="{" ".join(p)}"/>' for p in parts)
    body += "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="#2a6fdb"><title>{escape(str(label))}: {_fmt(v)}</title></circle>'
        for i, (label, v) in enumerate(points)
        if v is not None
    )
    ticks = sorted({0, len(points) - 1})
    body += "".join(
        f'<text x="{x(i):.1f}" y="{H - PAD + 14}" font-size="10" text-anchor="{"start" if i == 0 else "end"}">{escape(str(points[i][0]))}</text>'
        for i in ticks
    )
    body += f'<text x="2" y="{y(high) + 4:.1f}" font-size="10">{_fmt(high)}</text><text x="2" y="{y(low):.1f}" font-size="10">{_fmt(low)}</text>'
    if mark_x is not None:
        labels = [float(label) for label, _ in points]
        span = (labels[-1] - labels[0]) or 1
        mx = PAD + (W - PAD - 12) * (mark_x - labels[0]) / span
        body += (
            f'<line x1="{mx:.1f}" y1="8" x2="{mx:.1f}" y2="{H - PAD}" stroke="#d33" stroke-dasharray="4 3"/>'
            f'<text x="{mx + 4:.1f}" y="18" font-size="10" fill="#d33">{escape(mark_label)}</text>'
        )
    return _frame(body, title)


def bars(items: list[tuple[str, float]], title: str, marked: str | None = None) -> Markup:
    """Vertical bars (label, height); the bar labelled ``marked`` is drawn in red (this user's)."""
    if not items:
        return Markup(f'<p class="muted">no values to chart for {escape(title)}</p>')
    top = max(v for _, v in items) or 1
    width = (W - PAD - 12) / len(items)
    body = ""
    for i, (label, value) in enumerate(items):
        h = (H - PAD - 14) * value / top
        colour = "#d33" if label == marked else "#8aa9d6"
        body += (
            f'<rect x="{PAD + i * width + 1:.1f}" y="{H - PAD - h:.1f}" width="{max(width - 2, 1):.1f}" height="{h:.1f}" fill="{colour}">'
            f"<title>{escape(str(label))}: {_fmt(value)}</title></rect>"
        )
    for i in sorted({0, len(items) // 2, len(items) - 1}):
        body += f'<text x="{PAD + (i + 0.5) * width:.1f}" y="{H - PAD + 14}" font-size="10" text-anchor="middle">{escape(str(items[i][0]))}</text>'
    body += f'<text x="2" y="18" font-size="10">{_fmt(top)}</text>'
    return _frame(body, title)


def histogram(values: list[float], user_value: float | None, title: str, bins: int = 20) -> Markup:
    """The distribution of a numeric tag over the population, the bin holding ``user_value`` marked."""
    if not values:
        return bars([], title)
    low, high = min(values), max(values)
    if high == low:
        high = low + 1
    step = (high - low) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / step), bins - 1)] += 1
    labels = [_fmt(low + i * step) for i in range(bins)]
    marked = None if user_value is None else labels[min(max(int((user_value - low) / step), 0), bins - 1)]
    return bars(list(zip(labels, counts)), title, marked)
