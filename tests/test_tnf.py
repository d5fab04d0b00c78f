"""TNF: hand-counted tetramers, strand invariance, and the kernel against an independent build."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tdstore.features import tnf as T


def _naive_counts(seq: str) -> np.ndarray:
    """Slide a window over the string; skip windows with a non-ACGT letter."""
    order = ["".join(p) for p in itertools.product("ACGT", repeat=4)]
    position = {kmer: i for i, kmer in enumerate(order)}
    counts = np.zeros(256, dtype=np.int64)
    for i in range(len(seq) - 3):
        window = seq[i : i + 4].upper()
        if window in position:
            counts[position[window]] += 1
    return counts


def _counts(*seqs: str) -> np.ndarray:
    codes, offsets = T.encode_batch([s.encode() for s in seqs])
    return T.tetramer_counts(codes, offsets)


def test_hand_counted_tetramers():
    # AAAAC: windows AAAA, AAAC.  ACGTN ACGT: the N kills 4 windows, leaving ACGT twice.
    counts = _counts("AAAAC", "ACGTNACGT", "acgt", "ACG")
    assert counts.shape == (4, 256)
    assert counts[0, 0] == 1 and counts[0, 1] == 1 and counts[0].sum() == 2
    acgt = 0 * 64 + 1 * 16 + 2 * 4 + 3  # index 27
    assert counts[1, acgt] == 2 and counts[1].sum() == 2
    assert counts[2, acgt] == 1 and counts[2].sum() == 1  # lower case counts
    assert counts[3].sum() == 0  # shorter than a window


def test_windows_never_cross_contigs():
    # "TTT" + "T...": a window across the boundary would count TTTT.
    counts = _counts("AATTT", "TCCCC")
    assert counts[:, 255].sum() == 0


def test_batch_matches_naive_counts():
    rng = np.random.default_rng(0)
    letters = np.array(list("ACGTNacgtRY"))
    seqs = ["".join(rng.choice(letters, size=n)) for n in (4, 5, 37, 300, 1000)]
    counts = _counts(*seqs)
    for i, seq in enumerate(seqs):
        assert np.array_equal(counts[i], _naive_counts(seq)), seq


def test_reverse_complement_invariance():
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGT"), size=5000))
    forward, reverse = T.tnf([seq, T.reverse_complement(seq)])
    np.testing.assert_allclose(forward, reverse, atol=1e-6)


def test_palindrome_and_shape():
    # ACGT is its own reverse complement; a string of it is a palindrome of even length.
    palindrome = "ACGT" * 50
    assert palindrome == T.reverse_complement(palindrome)
    out = T.tnf([palindrome])
    assert out.shape == (1, 103) and out.dtype == np.float32
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_no_countable_window_projects_uniform():
    # vamb's projection of an all-zero count vector: frequencies 0 -> -1/256 everywhere.
    out = T.tnf(["NNNNNNNN"])
    expected = (np.full((1, 256), -1 / 256) @ T.kernel()).astype(np.float32)
    np.testing.assert_allclose(out, expected, atol=1e-7)


def test_kernel_is_orthonormal_and_satisfies_constraints():
    kernel = T.kernel()
    assert kernel.shape == (256, 103)
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(103), atol=1e-10)
    np.testing.assert_allclose(T.constraint_matrix() @ kernel, 0, atol=1e-10)


def _independent_kernel() -> np.ndarray:
    """The same null space, built differently: constraints from string rules, basis from
    the eigenvectors of the projector I - A^+ A (no SVD null space, no shared helper)."""
    order = ["".join(p) for p in itertools.product("ACGT", repeat=4)]
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    rows = [[1.0] * 256]
    for kmer in order:
        rc = "".join(comp[b] for b in reversed(kmer))
        if rc == kmer:
            continue  # a palindrome equals itself: no constraint (each pair appears twice)
        rows.append([1.0 if k == kmer else -1.0 if k == rc else 0.0 for k in order])
    for tri in ("".join(p) for p in itertools.product("ACGT", repeat=3)):
        rows.append([float(k[:3] == tri) - float(k[1:] == tri) for k in order])
    a = np.array(rows)
    projector = np.eye(256) - np.linalg.pinv(a) @ a
    values, vectors = np.linalg.eigh(projector)
    basis = vectors[:, values > 0.5]
    assert basis.shape == (256, 103)
    return basis


def test_shipped_kernel_matches_computed_kernel():
    # The shipped basis is fixed; a rebuild on another LAPACK may rotate it, never move it.
    shipped, rebuilt = T.kernel(), T.compute_kernel()
    np.testing.assert_allclose(shipped @ shipped.T, rebuilt @ rebuilt.T, atol=1e-10)
    np.testing.assert_allclose(rebuilt.T @ rebuilt, np.eye(103), atol=1e-10)


def test_kernel_agrees_with_independent_computation_up_to_rotation():
    mine, other = T.kernel(), _independent_kernel()
    # Same subspace: equal projectors, hence equal Gram matrices and distances of TNFs.
    np.testing.assert_allclose(mine @ mine.T, other @ other.T, atol=1e-10)
    rng = np.random.default_rng(2)
    seqs = ["".join(rng.choice(list("ACGT"), size=n)) for n in (2000, 3000, 4000, 5000)]
    counts = _counts(*seqs).astype(float)
    freq = counts / counts.sum(axis=1, keepdims=True) - 1 / 256
    a, b = T.project(counts).astype(float), freq @ other
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=1e-7)


@pytest.mark.parametrize("seq", ["ACGTTGCA" * 40, "GATTACA" * 60])
def test_tnf_equals_projection_of_naive_frequencies(seq):
    counts = _naive_counts(seq).astype(float)
    expected = (counts / counts.sum() - 1 / 256) @ T.kernel()
    np.testing.assert_allclose(T.tnf([seq])[0], expected, atol=1e-6)


def test_base_counts_match_naive():
    rng = np.random.default_rng(5)
    letters = np.array(list("ACGTNRacgt"))
    seqs = ["".join(rng.choice(letters, size=n)) for n in (1, 3, 4, 9, 250)]
    seqs += ["".join(rng.choice(list("ACGT"), size=n)) for n in (4, 5, 777)]
    codes, offsets = T.encode_batch([s.encode() for s in seqs])
    tetramers, bases = T.count_batch(codes, offsets)
    for i, seq in enumerate(seqs):
        up = seq.upper()
        expected = [up.count(b) for b in "ACGT"]
        expected.append(len(up) - sum(expected))
        assert bases[i].tolist() == expected, seq
        assert np.array_equal(tetramers[i], _naive_counts(seq))


# ----- the compiled counter and its numpy fallback ------------------------------------------
def _mixed_sequences() -> list[str]:
    rng = np.random.default_rng(11)
    letters = np.array(list("ACGTNacgtnRYkm"))
    seqs = ["".join(rng.choice(letters, size=n)) for n in (1, 2, 3, 4, 5, 17, 256, 3000)]
    seqs += ["".join(rng.choice(list("ACGT"), size=n)) for n in (4, 999)]
    # Longer than the counter's 65,535-base tally chunks, with an N run across a boundary.
    long = rng.choice(list("ACGT"), size=150_000)
    long[65_530:65_540] = "N"
    seqs.append("".join(long))
    return seqs


@pytest.mark.parametrize("compiled", [True, False])
def test_count_bytes_and_join_and_count_match_numpy(monkeypatch, compiled):
    if compiled and T._kmercount is None:
        pytest.skip("the C counter was not built")
    if not compiled:
        monkeypatch.setattr(T, "_kmercount", None)
    seqs = _mixed_sequences()
    codes, offsets = T.encode_batch([s.encode() for s in seqs])
    want_tetramers, want_bases = T.count_batch(codes, offsets)
    data, joined_offsets, tetramers, bases, flags = T.join_and_count(seqs)
    assert data == "".join(seqs).encode() and np.array_equal(joined_offsets, offsets)
    assert np.array_equal(tetramers, want_tetramers) and np.array_equal(bases, want_bases)
    assert flags == T.HAS_LOWER
    tetramers, bases, flags = T.count_bytes(data, offsets)
    assert np.array_equal(tetramers, want_tetramers) and np.array_equal(bases, want_bases)
    assert flags == T.HAS_LOWER


@pytest.mark.parametrize("compiled", [True, False])
def test_counter_flags_and_non_ascii(monkeypatch, compiled):
    if compiled and T._kmercount is None:
        pytest.skip("the C counter was not built")
    if not compiled:
        monkeypatch.setattr(T, "_kmercount", None)
    assert T.join_and_count(["ACGT", "GGCC"])[4] == 0
    assert T.join_and_count(["ACGT", "GG-C"])[4] == T.HAS_NON_LETTER
    assert T.join_and_count(["acgt*"])[4] == T.HAS_LOWER | T.HAS_NON_LETTER
    assert T.join_and_count([])[0] == b""
    with pytest.raises(UnicodeEncodeError):
        T.join_and_count(["ACGT", "ACG\u00e9"])


def test_compiled_counter_checks_its_buffers():
    if T._kmercount is None:
        pytest.skip("the C counter was not built")
    offsets = np.array([0, 4, 2], dtype=np.int64)  # out of order
    with pytest.raises(ValueError, match="offsets"):
        T._kmercount.count(b"ACGT", offsets, np.zeros(512, np.int64), np.zeros(10, np.int64))
    with pytest.raises(ValueError, match="sizes"):
        T._kmercount.count(b"ACGT", np.array([0, 4]), np.zeros(10, np.int64), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="lengths"):
        T._kmercount.join_count(
            ["ACGT"], np.array([0, 3]), np.zeros(256, np.int64), np.zeros(5, np.int64)
        )
