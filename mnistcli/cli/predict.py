"""`mnistcli predict`: its options, the settings they make, the predictions, and their view."""

from __future__ import annotations

import json
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.text import Text

from mnistcli.cli.options import (
    CheckpointOpt,
    ConfigOpt,
    DeviceOpt,
    RunsOpt,
    consoles,
    setting_flags,
    setting_option,
    settings_values,
    stderr_log,
)
from mnistcli.render.console import say

STREAM_BATCH = 64  # images per forward pass while rows stream

if TYPE_CHECKING:
    from rich.console import Console

    from mnistcli.loading import LoadedModel
    from mnistcli.predict import ImageFeed, Prediction
    from mnistcli.render.console import Consoles
    from mnistcli.render.predict_view import RowFormat
    from mnistcli.settings import PredictSettings

PathsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="PATH...",
        help="Image files (PNG, JPEG, BMP, GIF, TIFF, WebP), folders (their images), "
        "globs such as 'scans/*.png', or - to read paths from standard input, one a line.",
        show_default=False,
    ),
]
TopKOpt = Annotated[
    int | None,
    setting_option("predict.top_k", "-k", help="Most likely digits to list (1-10)."),
]
MinConfidenceOpt = Annotated[
    float | None,
    setting_option(
        "predict.min_confidence",
        metavar="P",
        help="Mark answers less probable than this (0-1) as low confidence; 0 marks none.",
    ),
]
WorkersOpt = Annotated[
    int | None,
    setting_option(
        "predict.workers",
        "-j",
        help="Processes that read and prepare the images; 1 for this process alone, 0 for "
        "one per core.",
    ),
]
ShowOpt = Annotated[bool, typer.Option("--show", help="Also draw the 28x28 input the model saw.")]
ExplainOpt = Annotated[
    bool,
    typer.Option(
        "--explain",
        help="Also show which pixels decided: the input beside its saliency (integrated "
        'gradients of the predicted digit); --json adds "saliency", 28x28.',
    ),
]
RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="No preprocessing: for images that already are MNIST-style 28x28 digits "
        "(bright ink on black).",
    ),
]
AsJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print one JSON object per image, one per line (path, status, digit, "
        "probability, top_k, error), nothing else.",
    ),
]


def predict(
    paths: PathsArg,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = None,
    top_k: TopKOpt = None,
    min_confidence: MinConfidenceOpt = None,
    workers: WorkersOpt = None,
    show: ShowOpt = False,
    explain: ExplainOpt = False,
    raw: RawOpt = False,
    runs_dir: RunsOpt = None,
    config: ConfigOpt = None,
    as_json: AsJsonOpt = False,
) -> None:
    """Read the digit in each image: a photo, a scan, a drawing or a screenshot.

    Each image is made like an MNIST digit: grayscale (transparency on white),
    inverted if the background is light, uneven lighting and contrast evened
    out (the lines of ruled or squared paper go black), cropped to the ink
    (specks ignored), scaled into 20x20 (a stroke far thinner or thicker than
    MNIST's brought back into its range) and centred by its centre of mass in
    28x28. A blank image says "no digit found". Many images are read on every
    core and printed as they are done, with progress on a terminal. A file
    that cannot be read gets a one-line error, the others are still predicted,
    and the exit code is 1. --explain shows which pixels decided each digit.
    """
    from mnistcli.errors import ImageError
    from mnistcli.predict import ImageFeed, collect_paths, default_workers
    from mnistcli.settings import predict_settings

    values = settings_values(setting_flags(predict, locals()), config)
    settings = predict_settings(values, checkpoint=checkpoint, raw=raw, explain=explain)
    cons = consoles()
    if "-" in paths and sys.stdin.isatty():  # not a pipe: the user is to type them
        say(cons.err, "reading image paths from standard input, one a line; Ctrl-D to end")
    # every input is checked before torch is imported (about 3 s): a typo is answered at once
    items = collect_paths(paths, stdin=sys.stdin if "-" in paths else None)
    if not items:
        raise typer.Exit(_fail(cons.err, "no paths on standard input; pipe in one path a line"))
    if all(isinstance(item, ImageError) for item in items):
        for item in items:
            say(cons.err, f"[bold red]error:[/] {escape(str(item))}")
        raise typer.Exit(2)
    workers = settings.workers or default_workers()
    # the workers start preparing the images while the model loads
    with ImageFeed(items, raw=settings.raw, workers=workers) as feed:
        if settings.explain or len(items) == 1:
            failed = _predict_whole(feed, settings, cons, show=show, as_json=as_json)
        else:
            failed = _predict_streaming(feed, settings, cons, show=show, as_json=as_json)
    if failed:
        raise typer.Exit(1)


class Interrupts:
    """Ctrl-C while rows stream is noted and acted on between two rows (stop.check), never
    half-way through printing one; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.hit = False

    def __enter__(self) -> Interrupts:
        self._previous = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def _note(self, signum: int, frame: object) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt


def _print_rows(
    preds: list[Prediction],
    fmt: RowFormat,
    out: Console,
    err: Console | None,
    *,
    as_json: bool,
) -> None:
    """A batch's rows (or JSON lines) on `out` in one print, each error on `err` before the
    row of its file (None: the table's own "failed:" row is on the same screen, once is
    enough)."""
    lines: list[Text] = []

    def flush() -> None:
        if not lines:
            return
        if as_json and not out.is_terminal:
            sys.stdout.write("".join(f"{line.plain}\n" for line in lines))
        else:  # through rich, which keeps a progress line below them
            out.print(Text("\n").join(lines), soft_wrap=True)
        lines.clear()

    for pred in preds:
        if pred.error and err is not None:
            flush()
            say(err, f"[bold red]error:[/] {escape(pred.error)}")
        if as_json:
            lines.append(Text(json.dumps(pred.to_dict())))
        else:
            lines.extend(fmt.row(pred))
    flush()


def _fail(err: Console, message: str) -> int:
    say(err, f"[bold red]error:[/] {escape(message)}")
    return 2


def _open(
    settings: PredictSettings, cons: Consoles, as_json: bool, threads: int | None
) -> LoadedModel:
    """The model, on `threads` CPU threads, and the line that says which (not with --json)."""
    from mnistcli.loading import open_model

    model = open_model(
        settings.checkpoint,
        settings.device,
        runs_dir=settings.runs_dir,
        need_module=settings.explain,
        channels_last=True,
        threads=threads,
        log=stderr_log(as_json, cons.err),
    )
    if not as_json:
        say(cons.err, f"model: {escape(str(model.path))} ({model.description}) on {model.device}")
    return model


def _error_lines(cons: Consoles, *, table: bool) -> Console | None:
    """Where a failed file's error line goes: stderr, unless the table of many images is on
    the same terminal (its "failed:" row says why, once is enough); None then."""
    from mnistcli.render.console import same_terminal

    return None if table and same_terminal(cons.out, cons.err) else cons.err


def _predict_whole(
    feed: ImageFeed,
    settings: PredictSettings,
    cons: Consoles,
    *,
    show: bool,
    as_json: bool,
) -> bool:
    """One image (a panel), or --explain (saliency needs every prediction first); with many
    images, a progress line on stderr while the model loads, predicts and explains."""
    from mnistcli.predict import predict_feed
    from mnistcli.render.predict_view import files_progress

    total = len(feed.items)
    errors = _error_lines(cons, table=total > 1 and not as_json)
    preds = []
    explained = None
    with files_progress(cons.err, total) as progress:
        model = _open(settings, cons, as_json, feed.model_threads())
        progress.phase("predicting", total)
        for pred in predict_feed(
            feed, model, top_k=settings.top_k, min_confidence=settings.min_confidence
        ):
            if pred.error and errors is not None:
                say(errors, f"[bold red]error:[/] {escape(pred.error)}")
            if as_json and not settings.explain:  # with --explain, once the saliency is known
                typer.echo(json.dumps(pred.to_dict()))
            preds.append(pred)
            progress.advance()
        if settings.explain and model.module is not None:
            from mnistcli.explain import explain_predictions

            progress.phase("explaining", total)
            explained = explain_predictions(
                model.module, preds, model.device, on_progress=progress.update
            )
    if as_json:
        for item in explained or []:
            typer.echo(json.dumps(item.to_dict()))
    else:
        from mnistcli.render.explain_view import print_predictions

        print_predictions(cons.out, preds, explained, show=show)
    return any(p.error for p in preds)


def _predict_streaming(
    feed: ImageFeed,
    settings: PredictSettings,
    cons: Consoles,
    *,
    show: bool,
    as_json: bool,
) -> bool:
    """Many images: a row (or a JSON line) per image as its batch is done, progress on stderr
    when it is a terminal, the summary at the end. Ctrl-C keeps the rows printed, says how
    many were done and exits 130; the pool is shut down by the feed's `with`."""
    from mnistcli.predict import predict_batches
    from mnistcli.render.console import is_color, same_terminal
    from mnistcli.render.predict_view import (
        RowFormat,
        Tally,
        files_progress,
        gallery,
        summary_line,
    )

    total = len(feed.items)
    tally = Tally()
    shown = []  # --show: the inputs to draw at the end
    paths = [str(getattr(i, "path", None) or i) for i in feed.items]
    width = cons.out.width if cons.out.is_terminal else None
    fmt = RowFormat(paths, width, settings.top_k, marks=settings.min_confidence > 0)
    try:
        # rows printed on the same terminal go above the bar, not through it
        with files_progress(cons.err, total, redirect_stdout=cons.out.is_terminal) as progress:
            # stdout on the progress line's own terminal: the rows go through its console,
            # which lifts the line, prints them, and draws it again below (the same screen)
            line = progress.console
            out = line if line is not None and same_terminal(cons.out, cons.err) else cons.out
            errors = _error_lines(cons, table=not as_json)
            model = _open(settings, cons, as_json, feed.model_threads())
            progress.phase("predicting", total)
            if not as_json:
                out.print(fmt.header(), soft_wrap=True)
                if (note := fmt.note()) is not None:
                    out.print(note)
            # batches of 64: rows and progress move in small steps, at no cost a user would see
            batches = predict_batches(
                feed,
                model,
                top_k=settings.top_k,
                min_confidence=settings.min_confidence,
                batch_size=STREAM_BATCH,
            )
            with Interrupts() as stop:
                for batch in batches:
                    _print_rows(batch, fmt, out, errors, as_json=as_json)
                    for pred in batch:
                        tally.add(pred)
                        if show and pred.pixels is not None and pred.digit is not None:
                            shown.append(pred)
                    progress.advance(len(batch))
                    stop.check()  # between two batches: the count said is the rows printed
    except KeyboardInterrupt:  # the progress line is gone by now
        sys.stdout.flush()
        say(
            cons.err,
            f"interrupted: {tally.images:,} of {total:,} images done (their rows are above)",
        )
        raise typer.Exit(130) from None
    if not as_json:
        if shown:
            cons.out.print()
            cons.out.print(gallery(shown, color=is_color(cons.out)))
        cons.out.print()
        # a terminal wraps it between words; a pipe gets it on one line, for grep
        summary = summary_line(tally, settings.min_confidence)
        cons.out.print(summary, soft_wrap=not cons.out.is_terminal)
    return tally.failed > 0
