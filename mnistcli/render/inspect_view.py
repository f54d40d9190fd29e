"""What `mnistcli inspect` shows: the layer table, the totals, the worked output sizes, and what
a checkpoint holds. Formats what mnistcli.summary computed; computes nothing itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from mnistcli.records import RunStatus
from mnistcli.render.console import is_color, percent, plural
from mnistcli.render.fit import Whole, first_fit, needed_width, stack_if_narrow
from mnistcli.summary import CheckpointInfo, Inspection, ModelSummary


def shape_text(shape: tuple[int, ...]) -> str:
    """(1, 32, 28, 28) from a one-image pass, shown as (N, 32, 28, 28): any batch size fits."""
    if not shape:
        return "-"
    return "(" + ", ".join(["N", *(str(d) for d in shape[1:])]) + ")"


def size_text(n_bytes: int) -> str:
    """Bytes in binary units: 1.61 MiB."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def count_text(n: int) -> str:
    """4,241,152 (4.24 M): exact, and readable at a glance."""
    if n >= 1_000_000_000:
        return f"{n:,} ({n / 1e9:.2f} G)"
    if n >= 1_000_000:
        return f"{n:,} ({n / 1e6:.2f} M)"
    if n >= 10_000:
        return f"{n:,} ({n / 1e3:.1f} k)"
    return f"{n:,}"


def layers_table(s: ModelSummary) -> Table:
    """One row per layer: type, settings, output shape, parameters, MACs; totals below."""
    table = Table(
        title=f"{escape(s.model)} on one {shape_text(s.input_shape)} input",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_footer=True,
    )
    last = shape_text(s.layers[-1].output_shape) if s.layers else ""
    table.add_column("layer", no_wrap=True, footer="total")
    table.add_column("type", no_wrap=True)
    table.add_column("settings", overflow="fold")
    table.add_column("output shape", no_wrap=True, footer=last)
    table.add_column("params", justify="right", no_wrap=True, footer=f"{s.params:,}")
    table.add_column("MACs/image", justify="right", no_wrap=True, footer=f"{s.macs:,}")
    for layer in s.layers:
        table.add_row(
            Whole(layer.name),
            Whole(layer.type),
            escape(layer.settings),
            Whole(shape_text(layer.output_shape)),
            Whole(f"{layer.params:,}" if layer.params else "-"),
            Whole(f"{layer.macs:,}" if layer.macs else "-"),
            style="bold" if layer.params else None,
        )
    return table


def layers_list(s: ModelSummary) -> RenderableType:
    """The layer table stacked for a narrow terminal: each layer's name, type and output shape
    on one line, its settings, parameters and MACs indented below (wrapped between words)."""
    lines: list[RenderableType] = [Text(f"{s.model} on one {shape_text(s.input_shape)} input")]
    for layer in s.layers:
        head = Text(f"{layer.name}  {layer.type}  {shape_text(layer.output_shape)}")
        if layer.params:
            head.stylize("bold")
        lines.append(head)
        counts = [f"{layer.params:,} params" if layer.params else "", _macs(layer.macs)]
        detail = ", ".join(x for x in [layer.settings, *counts] if x)
        lines.append(Padding(Text(detail, style="dim"), (0, 0, 0, 2)))
    last = shape_text(s.layers[-1].output_shape) if s.layers else ""
    total = f"total  {last}  {s.params:,} params, {s.macs:,} MACs/image"
    lines.append(Text(total, style="bold"))
    return Group(*lines)


def _macs(macs: int) -> str:
    return f"{macs:,} MACs/image" if macs else ""


def layers_view(console: Console, s: ModelSummary) -> RenderableType:
    """The layer table when every shape and count fits whole, else the stacked list."""
    return first_fit(console, [lambda: layers_table(s)]) or layers_list(s)


def totals_table(s: ModelSummary, console: Console | None = None) -> RenderableType:
    """Parameters, MACs and memory, names beside values (stacked when `console` is narrow)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("parameters", f"{s.params:,}"),
        ("trainable parameters", f"{s.trainable_params:,}"),
        ("MACs per image", count_text(s.macs)),
        ("parameter memory", f"{size_text(s.param_bytes)} ({s.dtype})"),
    ]
    if s.buffer_bytes:
        rows.append(("buffer memory", size_text(s.buffer_bytes)))
    outside = s.macs - s.layer_macs
    if outside:
        rows.append(("MACs outside layers", f"{outside:,} (operations in forward() itself)"))
    rows += [
        ("input", f"{size_text(s.input_bytes)} per image"),
        ("activation memory", f"{size_text(s.activation_bytes)} per image"),
        ("", f"{size_text(s.activation_bytes_batch)} per batch of {s.batch_size}"),
    ]
    for name, value in rows:
        grid.add_row(Whole(name), value)  # a name never wraps: its value does
    return grid if console is None else stack_if_narrow(console, grid, rows)


def formulas_table(s: ModelSummary, console: Console | None = None) -> RenderableType | None:
    """How each output size follows from the layer's settings, worked for this input; the
    formulas listed under their layers when `console` is too narrow for the table."""
    rows = [(layer, f) for layer in s.layers for f in layer.formulas]
    if not rows:
        return None
    rule = Text("output size = (in + 2*padding - kernel)/stride + 1, rounded down", style="bold")
    table = Table(header_style="bold", pad_edge=False, box=None)
    table.add_column("layer")
    table.add_column("type")
    table.add_column("worked for this input")
    for layer, formula in rows:
        table.add_row(Whole(layer.name), Whole(layer.type), Whole(formula))
    if console is None or needed_width(console, table) <= console.width:
        return Group(rule, table)
    listed: list[RenderableType] = [rule]
    for layer, formula in rows:
        listed += [Text(f"{layer.name}  {layer.type}"), Padding(Text(formula), (0, 0, 0, 2))]
    return Group(*listed)


def checkpoint_table(c: CheckpointInfo, console: Console | None = None) -> RenderableType:
    """What a checkpoint holds, names beside values (stacked when `console` is narrow)."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    weights = (
        f"[green]verified: they load into {escape(c.model)}[/]"
        if c.weights_loaded
        else "[red]not loaded[/]"
    )
    state = RunStatus(c.status).label
    weights_of = (
        f"weights part-way through epoch {c.epoch + 1}, after batch {c.step}"
        if c.step
        else f"weights of epoch {c.epoch}"
    )
    rows: list[tuple[str, str]] = [
        ("checkpoint", f"{escape(c.path)} ({escape(c.kind)}, {weights_of})"),
        ("weights", weights),
        ("trained", escape(c.created or "unknown")),
        ("run", f"{state}, {plural(c.epochs_run, 'epoch')} run{_by(c.world_size)}"),
    ]
    if c.best_epoch is not None:
        loss = "-" if c.best_val_loss is None else f"{c.best_val_loss:.4f}"
        rows.append(
            ("best epoch", f"{c.best_epoch}: val acc {percent(c.best_val_acc)}, val loss {loss}")
        )
    if c.test_acc is not None:
        n = f" on {c.test_n:,} images" if c.test_n else ""
        loss = "" if c.test_loss is None else f", loss {c.test_loss:.4f}"
        rows.append(("test", f"acc {percent(c.test_acc)}{loss}{n}"))
    else:
        rows.append(("test", "not run yet (the run has not finished)"))
    rows.append(("config", escape(_pairs(c.config))))
    rows.append(("versions", escape(_pairs(c.versions))))
    for i, (name, checksum) in enumerate(c.data.items()):
        rows.append(("data checksums" if i == 0 else "", escape(f"{name}: {checksum}")))
    for name, value in rows:
        grid.add_row(Whole(name), value)  # a name never wraps: its value does
    return grid if console is None else stack_if_narrow(console, grid, rows)


def _by(world_size: int) -> str:
    """Who trained the run, when more than one process did (torchrun)."""
    return f" by {world_size} processes (torchrun)" if world_size > 1 else ""


def _pairs(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def inspect_view(
    s: ModelSummary, checkpoint: CheckpointInfo | None, console: Console
) -> RenderableType:
    """Everything `inspect` prints, in reading order, fitted to `console`'s width."""
    parts: list[RenderableType] = [layers_view(console, s), Text(), totals_table(s, console)]
    formulas = formulas_table(s, console)
    if formulas is not None:
        parts += [Text(), formulas]
    if checkpoint is not None:
        parts += [Text(), checkpoint_table(checkpoint, console)]
    return Group(*parts)


def print_warnings(err: Console, found: Inspection) -> None:
    """What describing the model ran into: a checkpoint that did not load, a blank image."""
    if found.warning:
        err.print(
            f"[yellow]warning:[/] {escape(found.warning)}; describing the model alone",
            soft_wrap=True,
        )
    if found.blank:
        err.print(
            f"[yellow]warning:[/] no digit found in {escape(str(found.image))}; showing what "
            f"the layers make of a blank input",
            soft_wrap=True,
        )


def verdict_view(found: Inspection, *, color: bool, width: int) -> RenderableType:
    """`inspect --image`'s first lines: the 28x28 input the model saw, beside what it read
    there (the digit and its probability, the runners-up) and which model read it."""
    from mnistcli.render.predict_view import digit_art, framed, pct

    acts = found.activations
    assert acts is not None and found.pixels is not None
    ranked = sorted(range(len(acts.probabilities)), key=lambda d: -acts.probabilities[d])
    lines = [Text(found.image or "", style="bold")]
    if found.blank:
        lines.append(Text("no digit found: the layers below show a blank input", style="yellow"))
    else:
        verdict = Text("digit ")
        verdict.append(str(ranked[0]), style="bold green")
        verdict.append(f"  {pct(acts.probabilities[ranked[0]])}", style="bold")
        lines.append(verdict)
        others = ", ".join(f"{d} {pct(acts.probabilities[d])}" for d in ranked[1:3])
        lines.append(Text(f"then {others}", style="dim"))
    how = "taken as is (--raw)" if found.raw else "prepared as predict prepares it"
    lines += [Text(), Text(f"input: 28x28, {how}", style="dim")]
    if found.checkpoint is not None:
        c = found.checkpoint
        lines.append(Text(f"model: {c.path} ({c.kind}, epoch {c.epoch})", style="dim"))
    frame = framed(digit_art(found.pixels, color=color))
    text = Group(*lines)
    if (frame.width or 0) + 3 + max(line.cell_len for line in lines) > width:
        return Group(text, Text(), frame)  # too narrow for both side by side
    grid = Table.grid(padding=(0, 3))
    grid.add_column(width=frame.width, no_wrap=True)
    grid.add_column()
    grid.add_row(frame, text)
    return grid


def print_inspection(out: Console, found: Inspection) -> None:
    """inspect_view; with --image, first the input and the verdict, then every layer's output
    in forward order (or the --layer one alone), then inspect_view as a reference."""
    if found.activations is None:
        out.print(inspect_view(found.summary, found.checkpoint, out))
        return
    from mnistcli.render.feature_view import activations_view

    color = is_color(out)
    out.print(verdict_view(found, color=color, width=out.width))
    out.print(activations_view(found.activations, color=color, width=out.width, only=found.layer))
    if found.layer is None:
        out.print()
        out.print(inspect_view(found.summary, found.checkpoint, out))


def print_written(err: Console, paths: list[Path]) -> None:
    """'wrote PATH' for each file written."""
    for path in paths:
        err.print(f"wrote {escape(str(path))}", soft_wrap=True)
