"""The teacher head: a small classifier on frozen embeddings, saved as safetensors.

The head carries its own standardisation (mean/std of its training rows) and the
ordered leaf taxon ids of its flat softmax, so it can score raw embeddings anywhere::

    head = load_head(store.path / "soft_labels/kmer4.mmseqs.head.safetensors")
    logits = head(torch.from_numpy(embeddings))  # (n, len(head.leaf_ids))

Imports torch at module level: import this module only inside functions.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tdstore.atomic import atomic_path
from tdstore.errors import SchemaError
from tdstore.schemas import check_metadata
from tdstore.schemas import declarations as S

HEAD_KINDS = ("linear", "mlp")
MLP_WIDTH = 512
# A constant embedding column would divide by zero; such columns carry no signal anyway.
MIN_STD = 1e-6


class TeacherHead(nn.Module):
    """Standardise, then ``linear`` = Linear(hidden, L, bias=False) as in the paper, or ``mlp``."""

    def __init__(
        self,
        kind: str,
        hidden: int,
        leaf_ids: np.ndarray,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        width: int = MLP_WIDTH,
    ):
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head {kind!r}; choose one of {', '.join(HEAD_KINDS)}")
        self.kind = kind
        self.hidden = int(hidden)
        self.width = int(width)
        n_leaves = len(leaf_ids)
        mean = np.zeros(hidden, np.float32) if mean is None else mean
        std = np.ones(hidden, np.float32) if std is None else np.maximum(std, MIN_STD)
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, np.float32)))
        self.register_buffer("leaf_ids", torch.as_tensor(np.asarray(leaf_ids, np.int64)))
        if kind == "linear":
            self.net: nn.Module = nn.Linear(hidden, n_leaves, bias=False)
        else:
            self.net = nn.Sequential(
                nn.Linear(hidden, width),
                nn.GELU(),
                nn.Dropout(0.2),
                nn.Linear(width, n_leaves),
            )

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Leaf logits of raw (unstandardised) embeddings."""
        return self.net(self.standardise(x))

    def forward_standardised(self, z: torch.Tensor) -> torch.Tensor:
        """Leaf logits of embeddings already standardised with this head's statistics."""
        return self.net(z)


def save_head(
    path: Path | str, head: TeacherHead, metadata: dict[str, Any], *, atomic: bool = True
) -> None:
    """Write the head atomically; ``metadata`` (JSON-able) is stored in the safetensors header.

    ``atomic=False`` writes ``path`` in place: for a temporary that the caller publishes
    itself (soft_labels.publish_soft_labels renames it in together with its table).
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    header = {
        "tdstore.schema": S.TEACHER_HEAD.name,
        "tdstore.schema_version": str(S.TEACHER_HEAD.version),
        "head": head.kind,
        "hidden": str(head.hidden),
        "width": str(head.width),
        "n_leaves": str(len(head.leaf_ids)),
        "provenance": json.dumps(metadata, sort_keys=True, default=str),
    }
    with atomic_path(path) if atomic else contextlib.nullcontext(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=header)
        # safetensors creates the file 0600; give it the permissions of the store's other files.
        os.chmod(tmp, 0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def read_head_metadata(path: Path | str) -> dict[str, Any]:
    """The header of a saved head (schema-checked), without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise SchemaError(f"{path}: not a readable safetensors file ({exc})") from None
    check_metadata(
        str(path),
        S.TEACHER_HEAD.name,
        header.get("tdstore.schema"),
        header.get("tdstore.schema_version"),
    )
    header["provenance"] = json.loads(header.get("provenance") or "{}")
    return header


def load_head(path: Path | str, *, device: str = "cpu") -> TeacherHead:
    """Rebuild a saved head (weights, standardisation, leaf ids); in eval mode."""
    from safetensors.torch import load_file

    header = read_head_metadata(path)
    tensors = load_file(str(path), device="cpu")
    head = TeacherHead(
        header["head"],
        int(header["hidden"]),
        tensors["leaf_ids"].numpy(),
        width=int(header.get("width", MLP_WIDTH)),
    )
    try:
        head.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise SchemaError(f"{path}: weights do not match the header ({exc})") from None
    return head.to(device).eval()
