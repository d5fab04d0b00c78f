"""The ``--device`` option of every command that runs torch (train, teach, predict, embed).

Checked before any work, in one place, so that ``--device gpu`` or ``--device cuda`` on a
machine without CUDA is a one-line usage error naming the option and the valid values,
not a torch RuntimeError minutes later (or an "unreadable weights" message from the
loader that happened to touch the device first)::

    device = check_device(request.device)                  # cpu, cuda, cuda:N, mps
    device = check_device(device, allow_auto=True)         # embed: auto as well
"""

from __future__ import annotations

import re

from tdstore.errors import UsageError

_CUDA = re.compile(r"cuda(?::(\d+))?")


def check_device(device: str, *, option: str = "--device", allow_auto: bool = False) -> str:
    """``device`` unchanged if torch can use it here; else a UsageError naming ``option``.

    Accepted: ``cpu``; ``cuda`` and ``cuda:N`` where CUDA has that device; ``mps`` where
    torch sees an Apple GPU; ``auto`` only with ``allow_auto`` (the caller resolves it).
    """
    if device == "cpu" or (allow_auto and device == "auto"):
        return device  # no torch import: the common case stays fast
    import torch

    match = _CUDA.fullmatch(device)
    if match is not None:
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {device}: no CUDA device is available")
        count = torch.cuda.device_count()
        if match.group(1) is not None and int(match.group(1)) >= count:
            raise UsageError(
                f"{option} {device}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return device
    mps = torch.backends.mps.is_available()
    if device == "mps" and mps:
        return device
    valid = ["cpu", "cuda", "cuda:N"] + (["mps"] if mps else []) + (["auto"] if allow_auto else [])
    if device == "mps":
        raise UsageError(
            f"{option} mps: no MPS (Apple GPU) device is available; expected {', '.join(valid)}"
        )
    raise UsageError(f"{option} {device!r}: expected one of {', '.join(valid)}")
