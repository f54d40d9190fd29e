"""Turn a device name (auto, cpu, cuda, cuda:N, mps) into a torch.device, or say why not."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnistcli.errors import DeviceError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} asked for CUDA, but no CUDA GPU is available "
                f"here; use --device cpu or --device auto"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceError(
                f"--device {name}: this machine has {count} CUDA device(s), "
                f"numbered 0 to {count - 1}"
            )
        return torch.device("cuda", index)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(
                "--device mps asked for Apple's Metal GPU, which is not available "
                "here; use --device cpu or --device auto"
            )
        return torch.device("mps")
    raise DeviceError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 matrix maths natively (so autocast to it is a speed-up)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:  # AVX512-BF16 or AMX; without them bf16 is emulated and slower than fp32
            flags = open("/proc/cpuinfo").read()  # noqa: SIM115 (one read, Linux only)
        except OSError:
            return False
        return " avx512_bf16" in flags or " amx_bf16" in flags
    return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to autocast to for a `precision` setting, or None for plain float32."""
    import torch

    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None
