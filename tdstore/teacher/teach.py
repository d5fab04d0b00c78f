"""``tdstore teach``: a head on frozen embeddings, trained on noisy labels, gives soft labels.

Cross-fitting keeps label noise out of the soft labels: with ``folds=K`` the labelled
contigs are split into K folds and each fold's soft labels come from a head trained
on the other K-1 folds, so no contig's soft label comes from a head that saw its label::

    name = teach(store, embeddings="kmer4", labels="mmseqs", folds=5)
    table, meta = tdstore.teacher.soft_labels.load_soft_labels(store, name)

Training: the flat-softmax hierarchical loss (Taxometer's) over the leaves of the tree
built from the label set, AdamW, minibatches, early stopping on an inner validation
split (10% of the training rows) with patience 10; the best epoch's weights are kept.
Contigs without a label (not in the set, or unclassified) get the prediction of the final
head, trained on every label and saved next to the soft labels; their fold is -1.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tdstore.devices import check_device
from tdstore.errors import BadInputError, ConflictError, UsageError
from tdstore.progress import Progress
from tdstore.store import Store, validate_name
from tdstore.taxonomy import ROOT_ID, Hierarchy, Taxonomy

log = logging.getLogger("tdstore")

HEAD_KINDS = ("linear", "mlp")
DEFAULT_EPOCHS = 100
# Below this many training rows an inner validation split is too small to stop on.
MIN_ROWS_FOR_VALIDATION = 50
FINAL_HEAD_TAG = 1_000_003
# Multiply-adds per training step below which one CPU thread is faster than several.
SMALL_STEP_MACS = 1 << 28


@dataclass(frozen=True)
class TeachConfig:
    """Everything that changes the soft labels' numbers (recorded in their metadata)."""

    head: str = "linear"
    folds: int = 5
    top_k: int = 10
    seed: int = 0
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 1024
    lr: float = 1e-2
    weight_decay: float = 1e-4
    patience: int = 10
    val_fraction: float = 0.1
    device: str = "cpu"
    label_posterior: bool = False

    def validate(self) -> TeachConfig:
        if self.head not in HEAD_KINDS:
            raise UsageError(f"--head must be one of {', '.join(HEAD_KINDS)}, not {self.head!r}")
        for option, value in (("--folds", self.folds), ("--top-k", self.top_k)):
            if value < 1:
                raise UsageError(f"{option} must be at least 1, not {value}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise UsageError("epochs, batch size and patience must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UsageError(f"validation fraction must be in [0, 1), not {self.val_fraction}")
        check_device(self.device)
        return self


@dataclass
class HeadFit:
    """A trained head and how its training went."""

    head: Any  # tdstore.teacher.heads.TeacherHead
    epochs_run: int
    best_epoch: int
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None


@dataclass
class SoftLabelFit:
    """The result of :func:`fit_soft_labels`, before it is written to a store."""

    hierarchy: Hierarchy
    summary: dict[str, np.ndarray]  # per row: see soft_labels.summarise
    fold: np.ndarray  # (n_rows,) int16; -1 = no label, predicted by the final head
    final: HeadFit
    fold_metrics: list[dict[str, Any]] = field(default_factory=list)
    n_labelled: int = 0
    label_noise: float | None = None  # fitted noise rate, when the label posterior is on
    label_weight: np.ndarray | None = None  # (n_rows,) P(label right); NaN without a label


def derive_seed(seed: int, tag: int) -> int:
    """Independent, reproducible seeds for each fold's head and the final head."""
    return int(np.random.SeedSequence([seed, tag]).generate_state(1)[0])


def assign_folds(taxa: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold of each labelled contig, stratified by label so every taxon spreads over folds.

    Contigs are ordered by (label, random key) and dealt out round-robin: fold sizes
    differ by at most one and a taxon with >= K contigs is in every training set.
    """
    taxa = np.asarray(taxa, dtype=np.int64)
    keys = np.random.default_rng(seed).random(taxa.shape[0])
    order = np.lexsort((keys, taxa))
    fold = np.empty(taxa.shape[0], dtype=np.int64)
    fold[order] = np.arange(taxa.shape[0]) % folds
    return fold


def range_nll(logits: Any, lo: Any, hi: Any) -> Any:
    """Per-row flat-softmax NLL (Taxometer's hierarchical loss), from tdstore.losses."""
    from tdstore.losses import flat_softmax_nll

    return flat_softmax_nll(logits, lo, hi, reduction="none")


def _evaluate(head: Any, z: Any, lo: Any, hi: Any, batch: int = 8192) -> tuple[float, float]:
    """Mean flat-softmax NLL and the share of rows whose top leaf lies under their label."""
    import torch

    head.eval()
    total, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, z.shape[0], batch):
            logits = head.forward_standardised(z[start : start + batch])
            b_lo, b_hi = lo[start : start + batch], hi[start : start + batch]
            total += float(range_nll(logits, b_lo, b_hi).sum())
            top = logits.argmax(dim=1)
            correct += int(((top >= b_lo) & (top < b_hi)).sum())
    n = max(int(z.shape[0]), 1)
    return total / n, correct / n


def _step_macs(config: TeachConfig, hidden: int, n_leaves: int) -> int:
    from tdstore.teacher.heads import MLP_WIDTH

    if config.head == "linear":
        return config.batch_size * hidden * n_leaves
    return config.batch_size * MLP_WIDTH * (hidden + n_leaves)


@contextlib.contextmanager
def _cpu_threads(device: str, macs_per_step: int) -> Iterator[None]:
    """One CPU thread for small heads: intra-op threads cost more than they save there.

    On a shared 2-core machine two threads were measured 4-25x slower than one on heads
    of this size (a 136 x 512 x 18 MLP at batch 1024 included).
    """
    import torch

    if not device.startswith("cpu") or macs_per_step >= SMALL_STEP_MACS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_head(
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    leaf_ids: np.ndarray,
    config: TeachConfig,
    *,
    seed: int,
    progress: Progress | None = None,
) -> HeadFit:
    """Train one head on raw embeddings ``x`` (n, H) labelled by leaf ranges ``[lo, hi)``."""
    n, hidden = x.shape
    rng = np.random.default_rng(seed)
    n_val = int(round(config.val_fraction * n)) if n >= MIN_ROWS_FOR_VALIDATION else 0
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    with _cpu_threads(config.device, _step_macs(config, hidden, len(leaf_ids))):
        return _train_head(x, lo, hi, leaf_ids, config, seed, val_idx, train_idx, progress)


def _train_head(
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    leaf_ids: np.ndarray,
    config: TeachConfig,
    seed: int,
    val_idx: np.ndarray,
    train_idx: np.ndarray,
    progress: Progress | None,
) -> HeadFit:
    import torch

    from tdstore.teacher.heads import TeacherHead

    hidden = x.shape[1]
    n_val = val_idx.shape[0]
    mean = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = x.std(axis=0, dtype=np.float64).astype(np.float32)
    device = torch.device(config.device)
    # fork_rng: weight init and dropout are seeded without touching the caller's RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = TeacherHead(config.head, hidden, leaf_ids, mean, std).to(device)
        with torch.no_grad():
            z = head.standardise(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device))
        lo_t = torch.as_tensor(lo, dtype=torch.int64, device=device)
        hi_t = torch.as_tensor(hi, dtype=torch.int64, device=device)
        train_t = torch.as_tensor(train_idx, device=device)
        val_t = torch.as_tensor(val_idx, device=device)
        optimiser = torch.optim.AdamW(
            head.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        shuffler = torch.Generator().manual_seed(seed)
        best_loss, best_epoch, best_acc, best_state = float("inf"), -1, None, None
        train_loss, epochs_run = float("nan"), 0
        for epoch in range(config.epochs):
            head.train()
            order = train_t[torch.randperm(train_t.shape[0], generator=shuffler).to(device)]
            running = 0.0
            for start in range(0, order.shape[0], config.batch_size):
                batch = order[start : start + config.batch_size]
                logits = head.forward_standardised(z[batch])
                loss = range_nll(logits, lo_t[batch], hi_t[batch]).mean()
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                running += loss.item() * batch.shape[0]
            train_loss = running / max(order.shape[0], 1)
            epochs_run = epoch + 1
            if progress is not None:
                progress.advance(1)
            if n_val == 0:
                continue
            val_loss, val_acc = _evaluate(head, z[val_t], lo_t[val_t], hi_t[val_t])
            if val_loss < best_loss - 1e-6:
                best_loss, best_epoch, best_acc = val_loss, epoch + 1, val_acc
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            elif epoch + 1 - best_epoch >= config.patience:
                break
        if progress is not None:
            progress.advance(config.epochs - epochs_run)  # early stop: skip the rest of the bar
        if best_state is not None:
            head.load_state_dict(best_state)
    head.eval()
    return HeadFit(
        head=head,
        epochs_run=epochs_run,
        best_epoch=best_epoch if n_val else epochs_run,
        train_loss=train_loss,
        val_loss=best_loss if n_val else None,
        val_accuracy=best_acc,
    )


def leaf_probabilities(head: Any, x: np.ndarray, batch: int = 8192) -> np.ndarray:
    """(n, L) float64 softmax over the head's leaves (T = 1) of raw embeddings ``x``."""
    import torch

    device = next(iter(head.buffers())).device
    out = np.empty((x.shape[0], len(head.leaf_ids)), dtype=np.float64)
    head.eval()
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + batch], np.float32))
            logits = head(chunk.to(device)).double()
            out[start : start + batch] = torch.softmax(logits, dim=1).cpu().numpy()
    return out


def _chunk_rows(hierarchy: Hierarchy) -> int:
    # node_probabilities holds rows x (L + M) float64: keep a chunk near 256 MiB.
    width = hierarchy.n_leaves + hierarchy.node_ids.shape[0]
    return int(min(65536, max(256, (1 << 25) // max(width, 1))))


def _new_summary(n_rows: int, top_k: int) -> dict[str, np.ndarray]:
    from tdstore.taxonomy import RANKS

    return {
        "leaf_ids": np.zeros((n_rows, top_k), np.int64),
        "leaf_probs": np.zeros((n_rows, top_k), np.float32),
        "rest_mass": np.zeros(n_rows, np.float32),
        "lineage_ids": np.full((n_rows, len(RANKS)), -1, np.int64),
        "lineage_probs": np.full((n_rows, len(RANKS)), np.nan, np.float32),
        "depth": np.zeros(n_rows, np.int64),
        "taxon_id": np.zeros(n_rows, np.int64),
        "confidence": np.zeros(n_rows, np.float32),
    }


@dataclass(frozen=True)
class LabelPrior:
    """The noisy labels of the rows being filled, as leaf ranges, and the fitted noise rate."""

    lo: np.ndarray
    hi: np.ndarray
    noise: float


def _fill(
    out: dict[str, np.ndarray],
    rows: np.ndarray,
    head: Any,
    load: Callable[[np.ndarray], np.ndarray],
    hierarchy: Hierarchy,
    top_k: int,
    prior: LabelPrior | None = None,
    label_weight: np.ndarray | None = None,
) -> None:
    """Predict ``rows`` with ``head`` chunk by chunk and store their summaries in ``out``.

    With ``prior``, the summary is of the posterior given the teacher and each row's
    label (tdstore.teacher.posterior); ``label_weight[rows]`` receives P(label right).
    """
    from tdstore.teacher.posterior import label_posterior
    from tdstore.teacher.soft_labels import summarise

    step = _chunk_rows(hierarchy)
    for start in range(0, rows.shape[0], step):
        chunk = rows[start : start + step]
        q = leaf_probabilities(head, load(chunk))
        if prior is not None:
            part = slice(start, start + step)
            q, pi = label_posterior(q, prior.lo[part], prior.hi[part], prior.noise)
            if label_weight is not None:
                label_weight[chunk] = pi
        summary = summarise(q, hierarchy, top_k)
        for key, values in summary.items():
            out[key][chunk] = values


def _label_masses(
    heads: list[tuple[np.ndarray, Any]], x: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Each labelled row's teacher mass on its own label, from the head that did not see it."""
    from tdstore.teacher.posterior import label_mass

    mass = np.empty(x.shape[0], dtype=np.float64)
    for held, head in heads:
        where = np.flatnonzero(held)
        for start in range(0, where.shape[0], 8192):
            part = where[start : start + 8192]
            mass[part] = label_mass(leaf_probabilities(head, x[part]), lo[part], hi[part])
    return mass


def heldout_metrics(
    head: Any, x: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[float, float]:
    """Loss and top-leaf accuracy of ``head`` on raw embeddings it was not trained on."""
    import torch

    device = next(iter(head.buffers())).device
    with torch.inference_mode():
        z = head.standardise(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device))
    loss, accuracy = _evaluate(
        head,
        z,
        torch.as_tensor(lo, dtype=torch.int64, device=device),
        torch.as_tensor(hi, dtype=torch.int64, device=device),
    )
    return round(loss, 6), round(accuracy, 6)


def fit_soft_labels(
    load: Callable[[np.ndarray], np.ndarray],
    n_rows: int,
    label_rows: np.ndarray,
    label_taxa: np.ndarray,
    taxonomy: Taxonomy,
    config: TeachConfig,
    *,
    progress: bool = True,
) -> SoftLabelFit:
    """Cross-fitted soft labels for rows 0..n_rows-1.

    ``load(rows)`` returns the float32 embeddings (len(rows), H) of sorted store rows.
    Labels pointing at the root (unclassified) count as no label.
    """
    config.validate()
    label_rows = np.asarray(label_rows, dtype=np.int64)
    label_taxa = np.asarray(label_taxa, dtype=np.int64)
    labelled = label_taxa != ROOT_ID
    rows, taxa = label_rows[labelled], label_taxa[labelled]
    order = np.argsort(rows, kind="stable")
    rows, taxa = rows[order], taxa[order]
    if rows.size == 0:
        raise BadInputError("the label set classifies no contig: nothing to teach from")
    if np.unique(rows).size != rows.size:
        raise BadInputError("the label set labels a contig twice")
    if config.folds > rows.size:
        raise UsageError(f"--folds {config.folds} exceeds the {rows.size} labelled contigs")
    hierarchy = Hierarchy.from_labels(taxonomy, taxa)
    lo, hi = hierarchy.label_ranges(taxa)
    x = load(rows)
    with _cpu_threads(config.device, _step_macs(config, x.shape[1], hierarchy.n_leaves)):
        return _cross_fit(load, n_rows, rows, taxa, x, hierarchy, lo, hi, config, progress)


def _cross_fit(
    load: Callable[[np.ndarray], np.ndarray],
    n_rows: int,
    rows: np.ndarray,
    taxa: np.ndarray,
    x: np.ndarray,
    hierarchy: Hierarchy,
    lo: np.ndarray,
    hi: np.ndarray,
    config: TeachConfig,
    progress: bool,
) -> SoftLabelFit:
    def labelled_x(wanted: np.ndarray) -> np.ndarray:
        return x[np.searchsorted(rows, wanted)]

    top_k = min(config.top_k, hierarchy.n_leaves)
    out = _new_summary(n_rows, top_k)
    fold_of_row = np.full(n_rows, -1, dtype=np.int16)
    fold_metrics: list[dict[str, Any]] = []
    heads: list[tuple[np.ndarray, Any]] = []  # (held-out mask over labelled rows, head)
    n_heads = config.folds + 1 if config.folds > 1 else 1
    # Early stopping skips the rest of a head's epochs, so the bar's total is an upper bound.
    training = {"head": ""}
    with Progress(
        "teach",
        total=n_heads * config.epochs,
        unit="epochs",
        enabled=progress,
        status=lambda: training["head"],
    ) as bar:
        if config.folds > 1:
            fold = assign_folds(taxa, config.folds, config.seed)
            for k in range(config.folds):
                train, held = fold != k, fold == k
                training["head"] = f"head of fold {k + 1}/{config.folds}"
                fit = train_head(
                    x[train],
                    lo[train],
                    hi[train],
                    hierarchy.leaf_ids,
                    config,
                    seed=derive_seed(config.seed, k),
                    progress=bar,
                )
                loss, accuracy = heldout_metrics(fit.head, x[held], lo[held], hi[held])
                fold_metrics.append(
                    {
                        "fold": k,
                        "n_train": int(train.sum()),
                        "n_heldout": int(held.sum()),
                        "loss": loss,
                        "accuracy": accuracy,
                        "epochs_run": fit.epochs_run,
                        "best_epoch": fit.best_epoch,
                    }
                )
                log.info(
                    "teach: fold %d/%d held-out loss %.4f, accuracy %.4f",
                    k + 1,
                    config.folds,
                    loss,
                    accuracy,
                )
                heads.append((held, fit.head))
                fold_of_row[rows[held]] = k
        training["head"] = "final head (all labels)"
        final = train_head(
            x,
            lo,
            hi,
            hierarchy.leaf_ids,
            config,
            seed=derive_seed(config.seed, FINAL_HEAD_TAG),
            progress=bar,
        )
    if config.folds == 1:
        heads = [(np.ones(rows.shape[0], dtype=bool), final.head)]
        fold_of_row[rows] = 0
    noise, label_weight = None, None
    if config.label_posterior:
        from tdstore.teacher.posterior import fit_label_noise

        # The heads predict the labelled rows twice (here, then in _fill): keeping the
        # dense (rows x leaves) predictions between the passes would not fit at GTDB size.
        noise = fit_label_noise(_label_masses(heads, x, lo, hi), (hi - lo) / hierarchy.n_leaves)
        label_weight = np.full(n_rows, np.nan, dtype=np.float32)
        log.info("teach: fitted label noise rate %.4f", noise)
    for held, head in heads:
        prior = None if noise is None else LabelPrior(lo[held], hi[held], noise)
        _fill(out, rows[held], head, labelled_x, hierarchy, top_k, prior, label_weight)
    unlabelled = np.setdiff1d(np.arange(n_rows, dtype=np.int64), rows, assume_unique=True)
    if unlabelled.size:
        _fill(out, unlabelled, final.head, load, hierarchy, top_k)
    return SoftLabelFit(
        hierarchy=hierarchy,
        summary=out,
        fold=fold_of_row,
        final=final,
        fold_metrics=fold_metrics,
        n_labelled=int(rows.size),
        label_noise=noise,
        label_weight=label_weight,
    )


def default_name(embeddings: str, labels: str) -> str:
    return f"{embeddings}.{labels}"


def teach(
    store: Store,
    *,
    embeddings: str,
    labels: str,
    name: str | None = None,
    folds: int = 5,
    head: str = "linear",
    top_k: int = 10,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    device: str = "cpu",
    label_posterior: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Train the teacher head(s) and publish ``soft_labels/<name>`` (+ its head); returns name."""
    import tdstore
    from tdstore.calls import refuse_key_clash
    from tdstore.teacher import soft_labels as SL
    from tdstore.teacher.embed_store import load_embeddings

    name = validate_name(
        name if name is not None else default_name(embeddings, labels), "soft label"
    )
    config = TeachConfig(
        head=head,
        folds=folds,
        top_k=top_k,
        seed=seed,
        epochs=epochs,
        device=device,
        label_posterior=label_posterior,
    ).validate()
    path = SL.table_path(store, name)
    with store.lock(f"soft_labels-{name}"):
        if path.exists() and not overwrite:
            raise ConflictError(f"{path}: soft labels {name!r} exist; pass --overwrite to replace")
        refuse_key_clash(store, "soft", name)
        label_table, label_meta = store.labels(labels)
        _, embedding_attrs = load_embeddings(store, embeddings, rows=np.zeros(0, np.int64))
        resolved = {"name": name, "embeddings": embeddings, "labels": labels, **asdict(config)}
        log.info("teach: tdstore %s, config %s", tdstore.__version__, json.dumps(resolved))
        fit = fit_soft_labels(
            lambda rows: load_embeddings(store, embeddings, rows=rows)[0],
            store.n_contigs,
            label_table.column("row").to_numpy(),
            label_table.column("taxon_id").to_numpy(),
            store.taxonomy(),
            config,
            progress=progress,
        )
        leaf_ids = [int(t) for t in fit.hierarchy.leaf_ids]
        metadata = {
            "config": resolved,
            "embeddings": embeddings,
            "embeddings_fingerprint": embedding_attrs.get("fingerprint"),
            "labels": labels,
            "labels_source": label_meta.get("source"),
            "head": config.head,
            "folds": config.folds,
            "seed": config.seed,
            "top_k": int(fit.summary["leaf_ids"].shape[1]),  # min(--top-k, leaves)
            "epochs": config.epochs,
            "temperature": 1.0,
            "leaf_ids": leaf_ids,
            "n_labelled": fit.n_labelled,
            "fold_metrics": fit.fold_metrics,
            "final_head": {
                "epochs_run": fit.final.epochs_run,
                "best_epoch": fit.final.best_epoch,
                "val_loss": fit.final.val_loss,
                "val_accuracy": fit.final.val_accuracy,
            },
            "unlabelled_from": "final head (fold -1)",
            "label_posterior": (
                None
                if fit.label_noise is None
                else {
                    "noise": round(fit.label_noise, 6),
                    "mean_label_weight": round(float(np.nanmean(fit.label_weight)), 6),
                }
            ),
            "tdstore_version": tdstore.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        SL.publish_soft_labels(
            store,
            name,
            SL.to_table(store.contig_ids(), fit.summary, fit.fold),
            metadata,
            fit.final.head,
            {k: metadata[k] for k in ("embeddings", "embeddings_fingerprint", "labels", "seed")}
            | {"soft_labels": name, "refhash": store.refhash},
        )
    return name
