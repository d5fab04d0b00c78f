"""Distillation terms: the stored sparse teacher (top-k + rest mass) and the paper's joint head.

A stored teacher row is k leaf indices with probabilities plus the rest mass, spread
evenly over the other leaves. Tempering is ``p ** (1/T)`` renormalised (= softmax(t/T)
for the teacher's logits). The KL term is computed without densifying the teacher,
so 143k GTDB species cost no more than 100::

    kl = sparse_kl(student_logits, teacher.index, teacher.prob, teacher.rest, T=2.0)
    loss = soft_label_loss(logits, lo, hi, teacher, alpha=0.5, temperature=2.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tdstore.losses import flat_softmax_nll


@dataclass
class SparseTeacher:
    """Per-row teacher distribution over the student's leaves.

    ``index`` (n, k) student leaf indices (padding: any index with ``prob`` 0),
    ``prob`` (n, k) their probabilities, ``rest`` (n,) the mass of every other leaf
    together, ``present`` (n,) False for rows without a teacher (no KD there).
    """

    index: torch.Tensor
    prob: torch.Tensor
    rest: torch.Tensor
    present: torch.Tensor

    def take(self, rows: torch.Tensor) -> SparseTeacher:
        return SparseTeacher(self.index[rows], self.prob[rows], self.rest[rows], self.present[rows])

    def to(self, device: str | torch.device) -> SparseTeacher:
        return SparseTeacher(
            self.index.to(device),
            self.prob.to(device),
            self.rest.to(device),
            self.present.to(device),
        )


def _xlogx(x: torch.Tensor) -> torch.Tensor:
    return torch.xlogy(x, x)


def temper_sparse(
    prob: torch.Tensor, rest: torch.Tensor, n_leaves: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tempered teacher: (q of the k entries, q of EACH other leaf, number of other leaves)."""
    prob = prob.double()
    counted = (prob > 0).sum(1)
    n_other = (n_leaves - counted).clamp(min=0).double()
    power = 1.0 / temperature
    top = torch.where(prob > 0, prob.clamp(min=1e-300) ** power, torch.zeros_like(prob))
    each_rest = torch.where(
        (n_other > 0) & (rest > 0),
        (rest.double().clamp(min=0) / n_other.clamp(min=1)).clamp(min=1e-300) ** power,
        torch.zeros_like(n_other),
    )
    total = top.sum(1) + n_other * each_rest
    return top / total[:, None], each_rest / total, n_other


def sparse_kl(
    student_logits: torch.Tensor,
    index: torch.Tensor,
    prob: torch.Tensor,
    rest: torch.Tensor,
    *,
    temperature: float,
) -> torch.Tensor:
    """Per-row KL(teacher_T || softmax(student / T)) for a top-k + rest-mass teacher."""
    n_leaves = student_logits.shape[1]
    # The (n, L) part stays in the logits' precision; the small (n, k) parts use float64.
    log_student = torch.log_softmax(student_logits / temperature, dim=1)
    q_top, q_each, n_other = temper_sparse(prob, rest, n_leaves, temperature)
    valid = prob > 0
    gathered = log_student.gather(1, index.clamp(0, n_leaves - 1)).double()
    gathered = torch.where(valid, gathered, torch.zeros_like(gathered))
    # The "other" leaves are all leaves minus the k listed ones.
    other_log_sum = log_student.sum(1, dtype=torch.float64) - gathered.sum(1)
    kl = (
        _xlogx(q_top).sum(1)
        - (q_top * gathered).sum(1)
        + n_other * _xlogx(q_each)
        - q_each * other_log_sum
    )
    return kl.to(student_logits.dtype)


def logit_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """Per-row KL(softmax(t/T) || softmax(s/T)), as the paper's code computes it."""
    log_s = torch.log_softmax(student_logits / temperature, dim=1)
    log_t = torch.log_softmax(teacher_logits / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1)


def soft_label_loss(
    logits: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    teacher: SparseTeacher,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Per row alpha * H(student, noisy label) + (1 - alpha) * T^2 * KL(teacher_T || student_T).

    Rows without a teacher keep the whole hard loss, and the batch mean is over every
    row, so each row weighs the same whether it is distilled or not. The KL used to be
    averaged over the distilled rows alone, next to alpha times the hard loss of every
    row; the rows left out (labels that stop above species, which teach the student
    where to stop) then counted alpha times as much, and the distilled student made more
    confident wrong genus calls on contigs of novel genera (200k benchmark, RESULTS.md).
    alpha = 1 is the hard loss.
    """
    hard = flat_softmax_nll(logits, lo, hi, reduction="none")
    if alpha >= 1.0:
        return hard.mean()
    kl = sparse_kl(logits, teacher.index, teacher.prob, teacher.rest, temperature=temperature)
    mixed = alpha * hard + (1.0 - alpha) * temperature**2 * kl
    return torch.where(teacher.present, mixed, hard).mean()


def joint_loss(
    student_logits: torch.Tensor,
    head_logits: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """The paper's loss: a*H(s, y) + (1-a)*T^2*KL(softmax(t/T) || softmax(s/T)) + H(t, y).

    The teacher logits are detached in the KL term: the head learns only from labels.
    """
    hard = flat_softmax_nll(student_logits, lo, hi)
    kl = logit_kl(student_logits, head_logits.detach(), temperature=temperature).mean()
    head = flat_softmax_nll(head_logits, lo, hi)
    return alpha * hard + (1.0 - alpha) * temperature**2 * kl + head
