"""``tdstore train``: one student run, from the store into ``runs/<name>/``.

Loads the training rows once, holds out a share of the classified ones (early
stopping and calibration), trains, calibrates, predicts every contig, and publishes
the run directory with one rename::

    request = TrainRequest(labels="mmseqs", soft_labels="kmer4.mmseqs", name="kd")
    doc = train(tdstore.open("sim.tdstore"), request)      # run.json as a dict
"""

from __future__ import annotations

import math
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tdstore import __version__
from tdstore.atomic import atomic_path, write_json_atomic
from tdstore.calls import refuse_key_clash
from tdstore.errors import BadInputError, ConflictError, UsageError
from tdstore.schemas import declarations as S
from tdstore.store import Store, validate_name
from tdstore.student import runs
from tdstore.student.calibrate import KNOWN_REACH, SPECIES_REACH
from tdstore.student.checkpoint import EVERY_S, resume_dir
from tdstore.student.checkpoint import clear as clear_saved_state
from tdstore.student.fit import KD_ROWS, SCHEDULES, FitConfig

MODES = ("plain", "soft", "joint")


@dataclass
class TrainRequest:
    labels: str
    name: str | None = None
    soft_labels: str | None = None
    teacher_joint: str | None = None
    subset: str | None = None
    calibration_fraction: float = 0.1
    # After calibration, train this many more epochs on every labelled row (held-out
    # ones included) so that no label is left unused; 0 keeps the model as calibrated.
    refit_epochs: int = 3
    # Divisors of the calibration's reach gates above and at species; 0 = off.
    reach_gate: float = KNOWN_REACH
    species_reach_gate: float = SPECIES_REACH
    fit: FitConfig = field(default_factory=FitConfig)
    # Save the training state at most this often (seconds; 0 = after every epoch), so a
    # killed run resumes; it does not change the result.
    checkpoint_every_s: float = EVERY_S

    @property
    def mode(self) -> str:
        if self.soft_labels and self.teacher_joint:
            raise UsageError("choose one of --soft-labels and --teacher-joint")
        return "soft" if self.soft_labels else "joint" if self.teacher_joint else "plain"

    def run_name(self) -> str:
        if self.name is not None:
            return validate_name(self.name, "run")
        teacher = self.soft_labels or self.teacher_joint
        parts = [self.mode, self.labels] + ([teacher] if teacher else [])
        parts += [self.subset] if self.subset else []
        return validate_name("-".join(parts)[:128], "run")


PAPER_LR = 1e-3
# The refit's peak learning rate as a share of the main run's: enough to learn the
# held-out rows' labels in a few epochs (20k benchmark: held-out rows' genus calls
# 0.941 -> 0.956 correct, as the trained rows' 0.957) without undoing the calibrated model.
REFIT_LR_SCALE = 0.3


def paper_fit_config(base: FitConfig | None = None) -> FitConfig:
    """The TaxDistill authors' optimisation for --teacher-joint (REFERENCE.md).

    AdamW (student lr 1e-3 unless ``base`` sets another, weight decay 1e-4; head lr
    1e-4), cosine over the epochs to 1e-6, gradient accumulation 8, clip 1.0, no
    early stopping.
    """
    base = base or FitConfig()
    return replace(
        base,
        lr=PAPER_LR if base.lr == FitConfig.lr else base.lr,
        schedule="cosine",
        weight_decay=1e-4,
        head_lr=1e-4,
        grad_accumulation=8,
        clip_norm=1.0,
        eta_min=1e-6,
        patience=None,
    )


def _check(request: TrainRequest) -> None:
    fit = request.fit
    if not 0.0 <= request.calibration_fraction < 0.9:
        raise UsageError("--calibration-fraction must be in [0, 0.9)")
    if request.refit_epochs < 0:
        raise UsageError("--refit-epochs must be >= 0")
    if request.checkpoint_every_s < 0:
        raise UsageError("--checkpoint-every must be >= 0 seconds")
    for option, divisor in (
        ("--reach-gate", request.reach_gate),
        ("--species-reach-gate", request.species_reach_gate),
    ):
        if not 0.0 <= divisor <= 1.0:
            raise UsageError(f"{option} must be in [0, 1] (0 = off)")
    if not 0.0 <= fit.alpha <= 1.0:
        raise UsageError("--alpha must be in [0, 1]")
    # Written as `not x > 0` so that NaN is refused too.
    if not fit.temperature > 0 or math.isinf(fit.temperature):
        raise UsageError("--temperature must be a positive number")
    if fit.epochs < 1 or fit.batch_size < 2 or not 0 < fit.lr < math.inf:
        raise UsageError("--epochs >= 1, --batch-size >= 2 and --lr > 0 are required")
    if fit.seed < 0:
        raise UsageError("--seed must be >= 0")
    if fit.patience is not None and fit.patience < 0:
        raise UsageError("--patience must be >= 0 (0 = no early stopping)")
    if fit.schedule not in SCHEDULES:
        raise UsageError(f"--schedule must be one of {', '.join(SCHEDULES)}")
    if fit.kd_rows not in KD_ROWS:
        raise UsageError(f"--kd-rows must be one of {', '.join(KD_ROWS)}")
    from tdstore.devices import check_device

    check_device(fit.device)


# Fewer classified rows than this (or a single taxon) cannot train a student: with one
# leaf every contig would get that taxon with score 1.0.
MIN_CLASSIFIED_ROWS = 10


def _enough_labels(inputs: Any, request: TrainRequest) -> None:
    classified = int((inputs.labels > 0).sum())
    if classified >= MIN_CLASSIFIED_ROWS and inputs.hierarchy.n_leaves >= 2:
        return
    rows = f"label set {request.labels!r}" + (
        f" on subset {request.subset!r}" if request.subset else ""
    )
    raise BadInputError(
        f"{rows}: {classified} classified rows over {inputs.hierarchy.n_leaves} taxa; a student "
        f"needs at least {MIN_CLASSIFIED_ROWS} classified rows and 2 taxa"
    )


def versions() -> dict[str, str]:
    import pyarrow
    import torch

    return {
        "tdstore": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "platform": platform.platform(),
    }


def split_heldout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a random share of the CLASSIFIED rows only."""
    held = np.zeros(labels.shape[0], dtype=bool)
    classified = np.flatnonzero(labels > 0)
    n = int(round(fraction * classified.size))
    if n == 0 or classified.size - n < 2:
        return held
    rng = np.random.default_rng(seed + 7919)
    held[rng.choice(classified, size=n, replace=False)] = True
    return held


def train(
    store: Store,
    request: TrainRequest,
    *,
    overwrite: bool = False,
    progress: bool = True,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Train, calibrate, predict and publish one run; returns its run.json."""
    request.mode  # noqa: B018 - raises on conflicting teacher options
    name = request.run_name()
    if request.mode == "joint" and request.fit.schedule == "onecycle":
        request = replace(request, fit=paper_fit_config(request.fit))
    _check(request)
    target = runs.run_dir(store, name)
    store.refhash  # noqa: B018 - a clear error before any work if not ingested
    with store.lock(f"run-{name}"):
        if (target / runs.RUN_FILE).exists() and not overwrite:
            raise ConflictError(
                f"{store.path}: run {name!r} exists; pass --overwrite to replace it"
            )
        refuse_key_clash(store, "pred", name)
        with atomic_path(target) as tmp:
            tmp.mkdir(parents=True)
            doc = _train_into(store, request, name, tmp, progress=progress, argv=argv)
        # Published: the saved training state has done its job.
        clear_saved_state(resume_dir(store, name))
    return doc


def _train_into(
    store: Store,
    request: TrainRequest,
    name: str,
    folder: Any,
    *,
    progress: bool,
    argv: list[str] | None,
) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    from tdstore.progress import Progress
    from tdstore.student.checkpoint import TrainingState, training_key
    from tdstore.student.data import load_training_inputs
    from tdstore.student.fit import Validation, fit_student
    from tdstore.student.predict import (
        LoadedRun,
        store_prediction_table,
        weights_to_tensors,
        write_predictions,
    )

    started = time.perf_counter()
    fit = request.fit
    doc: dict[str, Any] = {
        "name": name,
        "status": "running",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "refhash": store.refhash,
        "argv": argv,
        "seed": fit.seed,
        # Results repeat bit for bit on CPU only with the same number of threads.
        "threads": torch.get_num_threads(),
        "config": {
            "mode": request.mode,
            "labels": request.labels,
            "soft_labels": request.soft_labels,
            "teacher_joint": request.teacher_joint,
            "subset": request.subset,
            "calibration_fraction": request.calibration_fraction,
            "refit_epochs": request.refit_epochs,
            "reach_gate": request.reach_gate,
            "species_reach_gate": request.species_reach_gate,
            "fit": fit.resolved(),
        },
        "versions": versions(),
    }
    write_json_atomic(folder / runs.RUN_FILE, S.RUN.stamp(doc))
    inputs = load_training_inputs(
        store,
        request.labels,
        subset=request.subset,
        soft_labels=request.soft_labels,
        embeddings=request.teacher_joint,
        progress=progress,
    )
    loaded_s = time.perf_counter() - started
    hierarchy = inputs.hierarchy
    _enough_labels(inputs, request)
    held = split_heldout(inputs.labels, request.calibration_fraction, fit.seed)
    train_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)
    lo, hi = hierarchy.label_ranges(inputs.labels)
    depth = (inputs.taxonomy.rank_matrix(inputs.labels) >= 0).sum(axis=1).astype(np.int64)

    def tensor(values: np.ndarray, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(values[rows]))

    validation = None
    if held_rows.size:
        validation = Validation(
            tensor(inputs.x, held_rows), tensor(lo, held_rows), tensor(hi, held_rows)
        )

    teacher = inputs.teacher
    key = training_key(
        {"tdstore": __version__, "refhash": store.refhash, **doc["config"]},
        [inputs.rows, inputs.x, lo, hi, depth, held, inputs.embeddings]
        + ([teacher.index, teacher.prob, teacher.rest, teacher.present] if teacher else []),
    )
    saved = TrainingState.open(store, name, key, every_s=request.checkpoint_every_s)

    def fit_rows(rows: np.ndarray, config: FitConfig, **options: Any) -> Any:
        """fit_student on ``rows``: their features, labels, depths, teacher and embeddings."""
        return fit_student(
            tensor(inputs.x, rows),
            tensor(lo, rows),
            tensor(hi, rows),
            tensor(depth, rows),
            hierarchy.n_leaves,
            config,
            teacher=inputs.teacher.take(rows).tensors() if inputs.teacher is not None else None,
            embeddings=tensor(inputs.embeddings, rows) if inputs.embeddings is not None else None,
            **options,
        )

    def epoch_bar(phase: str, title: str, total: int) -> Progress:
        """A bar over ``phase``'s epochs, starting after those a killed run saved."""
        done = saved.epochs_done(phase)
        resumed = f" (resumed after epoch {done})" if done else ""
        return Progress(
            f"{title} {name}{resumed}", total=total, unit="epochs", enabled=progress, initial=done
        )

    fitted = saved.load("fitted")
    if fitted is None:
        bar = epoch_bar("fit", "train", fit.epochs)
        last: dict[str, float] = {}
        bar.status = lambda: ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "epoch")

        def on_epoch(record: dict[str, float]) -> None:
            last.clear()
            last.update(
                {k: record[k] for k in ("loss", "val_loss", "samples_per_s") if k in record}
            )
            bar.advance(1)

        with bar:
            result = fit_rows(
                train_rows, fit, validation=validation, on_epoch=on_epoch, saved=saved
            )
        # The main fit is the long part: keep it whatever happens next.
        saved.save("fitted", _fitted_state(result))
    else:
        result = _fitted_result(fitted, inputs, fit)
    trained_s = time.perf_counter() - started - loaded_s

    calibration = _calibrate(result.model, inputs, held_rows, request)
    calibrated_s = time.perf_counter() - started - loaded_s - trained_s
    refit_history: list[dict[str, float]] = []
    if request.refit_epochs and held_rows.size:
        # Every row of the label set: the held-out ones join the training rows.
        every = np.arange(inputs.labels.shape[0])
        refit = replace(fit, epochs=request.refit_epochs, lr=fit.lr * REFIT_LR_SCALE, patience=None)
        with epoch_bar("refit", "refit", refit.epochs) as refit_bar:
            again = fit_rows(
                every,
                refit,
                on_epoch=lambda _record: refit_bar.advance(1),
                start=(result.model, result.head),
                saved=saved,
                phase="refit",
            )
        result.model, result.head = again.model, again.head
        refit_history = again.history
    refit_s = time.perf_counter() - started - loaded_s - trained_s - calibrated_s
    save_file(
        weights_to_tensors(result.model, result.head, hierarchy), str(folder / runs.WEIGHTS_FILE)
    )
    doc.update(
        network={
            "n_inputs": int(inputs.x.shape[1]),
            "n_leaves": hierarchy.n_leaves,
            "hidden": fit.hidden,
            "layers": fit.layers,
            "dropout": fit.dropout,
        },
        samples=store.samples,
        normalisation=inputs.normalisation.to_dict(),
        counts={
            "train_rows": int(train_rows.size),
            "heldout_rows": int(held_rows.size),
            "classified_train_rows": int((inputs.labels[train_rows] > 0).sum()),
            "leaves": hierarchy.n_leaves,
            "nodes": int(len(hierarchy.node_ids)),
        },
        history=result.history,
        refit_history=refit_history,
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        annealed_after=result.annealed_after,
        calibration=calibration.to_dict(),
        # Phases continued from a state a killed run saved: [{"phase", "epoch"}].
        resumed=saved.resumed,
    )
    loaded = LoadedRun(name, doc, result.model, hierarchy, calibration, inputs.normalisation)
    table = store_prediction_table(store, loaded, device=fit.device, progress=progress)
    write_predictions(store, folder, table, name)
    predicted_s = time.perf_counter() - started - loaded_s - trained_s - calibrated_s - refit_s
    doc.update(
        status=runs.FINISHED,
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        timings={
            "load_s": loaded_s,
            "train_s": trained_s,
            "calibrate_s": calibrated_s,
            "refit_s": refit_s,
            "predict_s": predicted_s,
            "total_s": time.perf_counter() - started,
            "epochs_run": len(result.history),
            "mean_samples_per_s": float(
                np.mean([r["samples_per_s"] for r in result.history]) if result.history else 0.0
            ),
            **_gpu_usage(fit.device),
        },
    )
    write_json_atomic(folder / runs.RUN_FILE, S.RUN.stamp(doc))
    return S.RUN.stamp(doc)


def _fitted_state(result: Any) -> dict[str, Any]:
    """The main fit's outcome: what calibration and the refit start from."""
    return {
        "epoch": len(result.history),
        "model": result.model.state_dict(),
        "head": result.head.state_dict() if result.head is not None else None,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "annealed_after": result.annealed_after,
    }


def _fitted_result(state: dict[str, Any], inputs: Any, fit: FitConfig) -> Any:
    """A FitResult rebuilt from :func:`_fitted_state` (the main fit of a killed run)."""
    from torch import nn

    from tdstore.student.fit import FitResult
    from tdstore.student.network import StudentNet

    n_leaves = inputs.hierarchy.n_leaves
    model = StudentNet(
        inputs.x.shape[1], n_leaves, hidden=fit.hidden, n_layers=fit.layers, dropout=fit.dropout
    )
    model.load_state_dict(state["model"])
    head = None
    if state["head"] is not None:
        head = nn.Linear(inputs.embeddings.shape[1], n_leaves, bias=False)
        head.load_state_dict(state["head"])
        head = head.to(fit.device)
    return FitResult(
        model=model.to(fit.device).eval(),
        head=head,
        history=list(state["history"]),
        best_epoch=state["best_epoch"],
        stopped_early=state["stopped_early"],
        annealed_after=state["annealed_after"],
    )


def _gpu_usage(device: str) -> dict[str, Any]:
    """The card's name and the run's peak GPU memory, so a timing says what it ran on."""
    if not device.startswith("cuda"):
        return {}
    import torch

    return {
        "gpu": torch.cuda.get_device_name(device),
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20,
    }


def label_informed(soft_meta: dict[str, Any] | None) -> bool:
    """Whether soft labels were computed from the noisy labels too (teach's label posterior)."""
    return bool(soft_meta and soft_meta.get("label_posterior"))


def _calibrate(model: Any, inputs: Any, held_rows: np.ndarray, request: TrainRequest) -> Any:
    """Per-rank calibration on the held-out rows (raw scores kept if there are none)."""
    from tdstore.student.calibrate import Calibration, Signals, fit_calibration
    from tdstore.student.chains import chain_scores, infer, taxon_matrix, teacher_node_probs

    if held_rows.size == 0:
        return Calibration()
    x = inputs.x[held_rows]
    # Soft labels that are a posterior given the label already contain the held-out
    # rows' own labels: as a calibration signal they would leak the target.
    teacher = None if label_informed(inputs.teacher_meta) else inputs.teacher
    parts = []
    for start, probs, depth in infer(model, x, device=request.fit.device):
        chain, raw = chain_scores(inputs.hierarchy, probs)
        signals = Signals(raw=raw, depth=np.where(chain >= 0, depth, np.nan))
        if teacher is not None:
            part = teacher.take(held_rows[start : start + probs.shape[0]])
            signals.teacher = teacher_node_probs(
                inputs.hierarchy, chain, part.index, part.prob, part.rest, part.present
            )
        parts.append((taxon_matrix(inputs.hierarchy, chain), signals))
    taxa = np.concatenate([p[0] for p in parts])
    signals = Signals(
        raw=np.concatenate([p[1].raw for p in parts]),
        depth=np.concatenate([p[1].depth for p in parts]),
        teacher=None if teacher is None else np.concatenate([p[1].teacher for p in parts]),
    )
    label_ranks = inputs.taxonomy.rank_matrix(inputs.labels[held_rows])
    return fit_calibration(
        signals,
        taxa,
        label_ranks,
        known_reach=request.reach_gate or None,
        species_reach=request.species_reach_gate or None,
    )
