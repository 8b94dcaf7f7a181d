"""Markdown table cells and tables, as the README's result tables are written."""

from __future__ import annotations

import math


def num(value, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "–" for None or NaN."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def interval_text(p: dict) -> str:
    """A paired difference and its 95% interval in points: ``"+4.8 [-3.8, +14.3]"``."""
    return f"{p['diff']:+.1f} [{p['lo']:+.1f}, {p['hi']:+.1f}]"
