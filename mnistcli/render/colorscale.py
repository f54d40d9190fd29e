"""Colour scales shared by the terminal views and the PNG figures, and their plain fallback.

Both scales are black at zero, so a map reads on a dark terminal as on the figures: "heat" (black,
red, orange, yellow, white; after the inferno map) for values >= 0, "diverging" (blue below zero,
the heat colours above) for values of both signs, such as a convolution's outputs or its weights.
"""

from __future__ import annotations

RGB = tuple[int, int, int]

HEAT: tuple[RGB, ...] = ((0, 0, 0), (120, 28, 109), (229, 92, 48), (246, 215, 70), (252, 255, 164))
COLD: tuple[RGB, ...] = ((0, 0, 0), (33, 102, 172), (146, 197, 222), (230, 245, 255))
SHADES = " ░▒▓█"  # without colour: magnitude only, darkest first
SIGNED_SHADES = "-= +#"  # without colour, signed scales: strongly negative ... strongly positive


def shade(t: float) -> str:
    """The SHADES glyph for a magnitude `t` in 0..1 (clipped)."""
    return SHADES[min(len(SHADES) - 1, int(max(0.0, t) * len(SHADES)))]


def _along(stops: tuple[RGB, ...], t: float) -> RGB:
    """The colour a fraction `t` (0..1) along piecewise-linear `stops`."""
    t = min(1.0, max(0.0, t)) * (len(stops) - 1)
    i = min(int(t), len(stops) - 2)
    f = t - i
    a, b = stops[i], stops[i + 1]
    return (
        round(a[0] + (b[0] - a[0]) * f),
        round(a[1] + (b[1] - a[1]) * f),
        round(a[2] + (b[2] - a[2]) * f),
    )


def heat(t: float) -> RGB:
    """0 -> black ... 1 -> pale yellow."""
    return _along(HEAT, t)


def diverging(t: float) -> RGB:
    """-1 -> pale blue, 0 -> black, 1 -> pale yellow."""
    return _along(COLD, -t) if t < 0 else _along(HEAT, t)


class Scale:
    """Maps a layer's values to colours (or shade glyphs): one scale per layer, so maps compare."""

    def __init__(self, low: float, high: float) -> None:
        self.signed = low < 0 < high
        self.span = max(abs(low), abs(high)) if self.signed else max(high, 1e-12)

    def fraction(self, value: float) -> float:
        """-1..1 for signed scales, 0..1 otherwise."""
        t = value / self.span
        return max(-1.0, min(1.0, t)) if self.signed else max(0.0, min(1.0, t))

    def rgb(self, value: float) -> RGB:
        t = self.fraction(value)
        return diverging(t) if self.signed else heat(t)

    def glyph(self, value: float) -> str:
        t = self.fraction(value)
        if self.signed:
            index = 2 if abs(t) < 0.15 else 0 if t < -0.5 else 1 if t < 0 else 3 if t < 0.5 else 4
            return SIGNED_SHADES[index]
        return shade(t)

    def legend(self) -> str:
        """What the glyphs or colours mean, in one line."""
        if self.signed:
            return f"-{self.span:.3g} blue … 0 black … +{self.span:.3g} yellow"
        return f"0 black … {self.span:.3g} yellow"

    def plain_legend(self) -> str:
        if self.signed:
            s = f"{self.span:.3g}"
            return f"'-' below -{s}/2, '=' below 0, ' ' near 0, '+' above 0, '#' above {s}/2"
        return f"' ░▒▓█' from 0 to {self.span:.3g}"
