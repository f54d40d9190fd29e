"""Loss and accuracy curves drawn in the terminal with plotext 6 (the figure API)."""

from __future__ import annotations

from collections.abc import Sequence

from mnistcli.records import EpochStats


def curves(history: Sequence[EpochStats], width: int, height: int, *, color: bool) -> str:
    """Two charts side by side (loss; accuracy %), train vs validation, as text.

    Returns ANSI-coloured text when `color`, plain text otherwise. plotext is imported here,
    where a chart is drawn: a piped or --json run never draws one (about 0.25 s of start-up).
    """
    import plotext as plt

    fig = plt.figure
    fig.clear()
    plt.terminal.limit(False, False)  # draw at the size asked, even inside a rich layout
    fig.plot_size(max(width, 40), max(height, 8))
    fig.subplots(1, 2)
    epochs = [h.epoch for h in history]
    panels = (
        ("loss", [h.train_loss for h in history], [h.val_loss for h in history]),
        ("accuracy %", [100 * h.train_acc for h in history], [100 * h.val_acc for h in history]),
    )
    for col, (title, train, val) in enumerate(panels, start=1):
        sub = fig.subplot(1, col)
        sub.theme("simple" if color else "colorless")
        sub.title(f"{title}   • train   ▞ val")  # the key in the title never covers a curve
        for ys, marker in ((train, "dot"), (val, "hd")):
            sig = sub.signal(epochs, ys, marker=marker)
            sig.lines()
            sub.draw(sig)
        sub.label("epoch", axis=0)
        step = max(1, len(epochs) // 10)
        sub.ruler(0).ticks(epochs[::step], [str(e) for e in epochs[::step]])  # whole epochs
        sub.legend(False)
    text = fig.build().string(colorless=not color)
    # plotext pads every line to the chart's width; without colour the padding is only spaces,
    # which a file or a pipe would keep (with colour, codes follow them: left as drawn)
    return text if color else "\n".join(line.rstrip(" ") for line in text.split("\n"))
