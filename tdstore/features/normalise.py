"""The student's input vector, exactly as Taxometer builds it, from raw stored features.

Stored features are raw; normalisation is dataset-wide and its statistics are kept
with each run so new contigs are scaled the same way::

    stats = NormalisationStats.fit(tnf, abundance)
    x = stats.transform(tnf_rows, abundance_rows)   # (n, K + 103 + 1) float32
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_LOG_FLOOR = 0.001
_COLUMN_TOTAL = 1e6


@dataclass(frozen=True)
class NormalisationStats:
    """Column sums of abundance, TNF mean/std and log-total mean/std over the data set."""

    abundance_column_sums: tuple[float, ...]
    tnf_mean: tuple[float, ...]
    tnf_std: tuple[float, ...]
    log_total_mean: float
    log_total_std: float

    @classmethod
    def fit(cls, tnf: np.ndarray, abundance: np.ndarray) -> NormalisationStats:
        tnf = np.asarray(tnf, dtype=np.float64)
        abundance = np.asarray(abundance, dtype=np.float64)
        column_sums = abundance.sum(axis=0)
        log_total = _log_total(abundance, column_sums)
        return cls(
            abundance_column_sums=tuple(float(x) for x in column_sums),
            tnf_mean=tuple(float(x) for x in tnf.mean(axis=0)),
            tnf_std=tuple(float(x) for x in tnf.std(axis=0)),
            log_total_mean=float(log_total.mean()),
            log_total_std=float(log_total.std()),
        )

    def transform(self, tnf: np.ndarray, abundance: np.ndarray) -> np.ndarray:
        """[row-normalised abundances | z-scored TNF | z-scored log total abundance]."""
        column_sums = np.asarray(self.abundance_column_sums, dtype=np.float64)
        scaled = _scale_columns(np.asarray(abundance, dtype=np.float64), column_sums)
        total = scaled.sum(axis=1)
        k = scaled.shape[1]
        # All-zero rows become uniform (1/K); a store without abundances has K = 0 columns.
        with np.errstate(invalid="ignore", divide="ignore"):
            rows = np.where(total[:, None] > 0, scaled / total[:, None], 1.0 / max(k, 1))
        log_total = np.log(np.maximum(total, _LOG_FLOOR))
        z_total = _zscore(log_total, self.log_total_mean, self.log_total_std)
        z_tnf = _zscore(
            np.asarray(tnf, dtype=np.float64), np.asarray(self.tnf_mean), np.asarray(self.tnf_std)
        )
        return np.concatenate([rows, z_tnf, z_total[:, None]], axis=1).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NormalisationStats:
        return cls(
            abundance_column_sums=tuple(data["abundance_column_sums"]),
            tnf_mean=tuple(data["tnf_mean"]),
            tnf_std=tuple(data["tnf_std"]),
            log_total_mean=float(data["log_total_mean"]),
            log_total_std=float(data["log_total_std"]),
        )


def _scale_columns(abundance: np.ndarray, column_sums: np.ndarray) -> np.ndarray:
    # A sample with no reads at all stays zero rather than dividing by zero.
    factor = np.divide(
        _COLUMN_TOTAL, column_sums, out=np.zeros_like(column_sums), where=column_sums > 0
    )
    return abundance * factor[None, :]


def _log_total(abundance: np.ndarray, column_sums: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(_scale_columns(abundance, column_sums).sum(axis=1), _LOG_FLOOR))


def _zscore(values: np.ndarray, mean: np.ndarray | float, std: np.ndarray | float) -> np.ndarray:
    # vamb's zscore leaves constant columns centred (std 0 -> divide by 1).
    std = np.where(np.asarray(std) > 0, std, 1.0)
    return (values - mean) / std
