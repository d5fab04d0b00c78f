"""Training state saved between epochs, so that a killed ``tdstore train`` goes on where it was.

A student at 200k contigs trains for tens of seconds per epoch on a CPU, and a SLURM job
can hit its time limit or be pre-empted. ``train`` saves the training loop's whole state
(weights, optimiser and schedule, both random streams, the early-stopping bookkeeping and
the history) into ``runs/.resume/<name>/`` at most every ``every_s`` seconds, and the same
command, run again, continues from the last save. The state is keyed by a digest of
everything that decides the result (the resolved config, the tdstore version and the
training arrays themselves): a state with another key belongs to another run and is
discarded. On a CPU a resumed run ends with the same weights, bit for bit, as an
uninterrupted one with the same thread count::

    saved = TrainingState.open(store, "kd", key=training_key(config, arrays))
    state = saved.load("fit")          # None: nothing saved, start fresh
    saved.save("fit", state)           # atomic safetensors, no pickle
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tdstore.atomic import atomic_path, discard, write_json_atomic
from tdstore.store import Store, validate_name

RESUME_DIR = ".resume"
KEY_FILE = "key.json"
SUFFIX = ".safetensors"
# The default interval: a 200k-contig CPU epoch takes about 45 s, so a kill loses at most
# about two epochs, while a fast GPU run (epochs of a fraction of a second) does not spend
# its time writing the ~20 MB state after every epoch.
EVERY_S = 60.0


def resume_root(store: Store) -> Path:
    return store.object_dir("runs") / RESUME_DIR


def resume_dir(store: Store, name: str) -> Path:
    return resume_root(store) / validate_name(name, "run")


def training_key(config: dict[str, Any], arrays: list[np.ndarray | None]) -> str:
    """A digest of a run's resolved config and of every array its training reads."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@dataclass
class TrainingState:
    """The saved phases of one run's training (``fit``, ``fitted``, ``refit``)."""

    folder: Path
    key: str
    every_s: float = EVERY_S
    # What this process resumed from, for run.json: [{"phase": ..., "epoch": ...}].
    resumed: list[dict[str, Any]] = field(default_factory=list)
    discarded: bool = False
    _last_save: float = field(default_factory=time.monotonic)
    _loaded: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    @classmethod
    def open(cls, store: Store, name: str, key: str, every_s: float = EVERY_S) -> TrainingState:
        """The run's saved state if its key matches; a state of other settings is discarded."""
        folder = resume_dir(store, name)
        discarded = False
        if folder.exists():
            try:
                saved = json.loads((folder / KEY_FILE).read_text()).get("key")
            except (OSError, ValueError):
                saved = None
            if saved != key:
                discard(folder)
                discarded = True
        return cls(folder, key, every_s, discarded=discarded)

    def load(self, phase: str) -> dict[str, Any] | None:
        """The state saved for ``phase`` (read once), or None."""
        if phase not in self._loaded:
            self._loaded[phase] = self._read(phase)
        return self._loaded[phase]

    def _read(self, phase: str) -> dict[str, Any] | None:
        path = self.folder / f"{phase}{SUFFIX}"
        if not path.exists():
            return None
        try:
            state = read_state(path)
        except Exception:  # a damaged file (disk full, edited): not worth failing the run for
            self.clear()
            self.discarded = True
            self._loaded.clear()
            return None
        self.resumed.append({"phase": phase, "epoch": int(state.get("epoch", 0))})
        return state

    def epochs_done(self, phase: str) -> int:
        state = self.load(phase)
        return int(state["epoch"]) if state is not None else 0

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.every_s

    def save(self, phase: str, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / KEY_FILE
        if not key_file.exists():
            write_json_atomic(key_file, {"key": self.key})
        write_state(self.folder / f"{phase}{SUFFIX}", state)
        self._last_save = time.monotonic()

    def clear(self) -> None:
        """Remove the saved state (the run is published, or another run replaces it)."""
        clear(self.folder)


def clear(folder: Path) -> None:
    if folder.exists():
        discard(folder)
    with contextlib.suppress(OSError):  # the last run's state gone: runs/.resume too
        folder.parent.rmdir()


# ----- the state as safetensors: tensors in the file, the rest as JSON in its metadata ---------
# Like every weight file tdstore writes, no pickle: loading a state cannot run code.
_STATE_KEY = "tdstore.training_state"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a nested state (dicts, lists, tuples, numbers, strings, tensors) atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    document = json.dumps(_encode(state, tensors))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_STATE_KEY: document})


def read_state(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        document = (handle.metadata() or {})[_STATE_KEY]
        names = list(handle.keys())  # a safe_open handle is not iterable
        tensors = {key: handle.get_tensor(key) for key in names}
    return _decode(json.loads(document), tensors)


def _encode(value: Any, tensors: dict[str, Any]) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        # A copy of its own: safetensors refuses tensors that share memory.
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _encode(v, tensors) for k, v in value.items()}}
        # Optimiser state is keyed by parameter index (int).
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a training state")


def _decode(value: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value["__dict__"].items()}
