"""Everything that draws: rich tables and live views, plotext charts, terminal digits, PNGs."""
