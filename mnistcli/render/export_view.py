"""What `mnistcli export` prints: the file written and its self-check."""

from __future__ import annotations

from rich.markup import escape

from mnistcli.export import ExportResult
from mnistcli.render.console import percent

READERS = {"onnx": "onnxruntime", "safetensors": "safetensors", "pt2": "torch.export"}


def export_lines(result: ExportResult) -> str:
    """Rich markup: the files, the two accuracies and the largest logit difference."""
    check = result.check
    files = ", ".join(escape(str(p)) for p in result.files)
    reader = READERS[result.format]
    return "\n".join(
        [
            f"[bold green]wrote[/] {files} ({result.format}, {result.bytes / 2**20:.2f} MiB)",
            f"self-check on {check.n:,} test digits: PyTorch {percent(check.torch_accuracy)}, "
            f"{reader} {percent(check.export_accuracy)}; max |logit difference| "
            f"{check.max_abs_diff:.1e} (limit {check.tolerance:.0e}), "
            f"{check.mismatches} predicted digits differ",
        ]
    )
