"""The simulator: determinism, exact formats, taxonomy consistency, label noise, signal."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
from pathlib import Path

import dnaio
import numpy as np
import pytest

from tdstore.simulate import FILES, LabelNoise, simulate

RANK_LETTERS = "dpcofgs"
NCBI_RANKS = ["superkingdom", "phylum", "class", "order", "family", "genus", "species"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("sim")
    return simulate(out, n_contigs=800, seed=7, genome_max=120_000)


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _records(sim: dict) -> list[tuple[str, str]]:
    with dnaio.open(sim["fasta_path"]) as reader:
        return [(r.name, r.sequence) for r in reader]


def test_same_seed_same_bytes_other_seed_differs(sim: dict, tmp_path: Path) -> None:
    again = simulate(tmp_path / "a", n_contigs=800, seed=7, genome_max=120_000)
    assert _digest(Path(sim["summary_path"]).parent) == _digest(Path(again["summary_path"]).parent)
    simulate(tmp_path / "b", n_contigs=800, seed=8, genome_max=120_000)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["contigs.fna.gz"] != b["contigs.fna.gz"]
    assert a["labels.tsv"] != b["labels.tsv"]


def test_label_noise_does_not_change_sequences(sim: dict, tmp_path: Path) -> None:
    noisier = simulate(
        tmp_path, n_contigs=800, seed=7, genome_max=120_000, noise=LabelNoise(novel_wrong=0.9)
    )
    assert (
        _digest(tmp_path)["contigs.fna.gz"]
        == _digest(Path(sim["summary_path"]).parent)["contigs.fna.gz"]
    )
    assert noisier["summary"]["label_quality"] != sim["summary"]["label_quality"]


def test_outputs_complete_and_no_temporaries(sim: dict) -> None:
    out = Path(sim["summary_path"]).parent
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())
    assert sorted(p.name for p in (out / "taxdump").iterdir()) == ["names.dmp", "nodes.dmp"]
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["seed"] == 7
    assert summary["counts"]["contigs"] == 800
    assert summary["counts"]["kept"] + summary["counts"]["filtered"] == 800


def test_fasta_ids_lines_and_lengths(sim: dict) -> None:
    records = _records(sim)
    assert len(records) == 800
    names = [n for n, _ in records]
    assert len(set(names)) == 800
    assert all(n.startswith("S") and "C" in n for n in names)
    assert {n.split("C")[0] for n in names} == {"S1", "S2", "S3", "S4"}
    assert set("".join(s for _, s in records)) <= set("ACGTN")
    # 80-column lines: every sequence line but a record's last is exactly 80 long.
    with gzip.open(sim["fasta_path"], "rt") as fh:
        lines = fh.read().splitlines()
    for line, following in itertools.pairwise(lines):
        if not line.startswith(">") and not following.startswith(">"):
            assert len(line) == 80
        assert 0 < len(line) <= 80 or line.startswith(">")
    lengths = np.array([len(s) for _, s in records])
    kept = lengths[lengths >= 2000]
    assert 0.05 <= (lengths < 2000).mean() <= 0.16
    assert lengths.min() >= 500
    assert 3500 <= np.median(kept) <= 7000
    assert (kept > 2 * np.median(kept)).mean() >= 0.1  # a long tail
    assert kept.max() > 20_000


def test_abundance_table(sim: dict) -> None:
    rows = _tsv(sim["abundance_path"])
    assert rows[0] == ["contigname", "S1", "S2", "S3", "S4"]
    assert [r[0] for r in rows[1:]] == [n for n, _ in _records(sim)]
    depth = np.array([[float(x) for x in r[1:]] for r in rows[1:]])
    assert (depth >= 0).all()
    assert (depth == 0).any()  # some genomes are absent from some samples
    own = np.array([depth[i, int(r[0][1:].split("C")[0]) - 1] for i, r in enumerate(rows[1:])])
    assert (own > 0).all()  # a contig is covered in the sample it was assembled from


def _taxdump(sim: dict) -> tuple[dict[int, int], dict[int, str], dict[int, str]]:
    taxdump = Path(sim["taxdump_path"])
    parent, rank, name = {}, {}, {}
    for line in (taxdump / "nodes.dmp").read_text().splitlines():
        assert line.endswith("\t|")
        fields = line[:-2].split("\t|\t")
        assert len(fields) == 13
        taxid = int(fields[0])
        assert taxid not in parent  # one parent per taxon
        parent[taxid], rank[taxid] = int(fields[1]), fields[2]
    for line in (taxdump / "names.dmp").read_text().splitlines():
        fields = line[:-2].split("\t|\t")
        assert fields[3] == "scientific name"
        name[int(fields[0])] = fields[1]
    return parent, rank, name


def _lineage(taxid: int, parent: dict[int, int]) -> list[int]:
    chain = []
    while taxid != 1:
        chain.append(taxid)
        taxid = parent[taxid]
    return chain[::-1]


def test_taxdump_tree_and_gold_lineages(sim: dict) -> None:
    parent, rank, name = _taxdump(sim)
    assert parent[1] == 1 and rank[1] == "no rank" and name[1] == "root"
    assert set(parent) == set(name)
    assert all("__" not in n and not n[:2].endswith("_") for n in name.values())
    for taxid in parent:
        if taxid != 1:
            chain = _lineage(taxid, parent)
            assert [rank[t] for t in chain] == NCBI_RANKS[: len(chain)]
    gold = _tsv(sim["gold_path"])
    assert gold[0] == ["contigs", "predictions", "novel"]
    for _, lineage, novel in gold[1:]:
        parts = lineage.split(";")
        assert [p[:3] for p in parts] == [f"{c}__" for c in RANK_LETTERS]
        assert novel in {"true", "false"}
    # Each name has exactly one parent across the gold standard.
    parents: dict[str, str] = {}
    for _, lineage, _ in gold[1:]:
        parts = lineage.split(";")
        for up, down in itertools.pairwise(parts):
            assert parents.setdefault(down, up) == up


def test_cami_binning_matches_gold(sim: dict, tmp_path: Path) -> None:
    lines = Path(sim["binning_path"]).read_text().splitlines()
    assert lines[0] == "@Version:0.9.1"
    assert lines[1].startswith("@SampleID:")
    header = lines.index("@@SEQUENCEID\tBINID\tTAXID\t_LENGTH")
    rows = [line.split("\t") for line in lines[header + 1 :]]
    assert len(rows) == 800
    parent, _, name = _taxdump(sim)
    gold = {r[0]: r[1] for r in _tsv(sim["gold_path"])[1:]}
    lengths = {n: len(s) for n, s in _records(sim)}
    genome_of_species: dict[str, str] = {}
    for cid, bin_id, taxid, length in rows:
        species = gold[cid].split(";")[-1][3:]
        assert name[int(taxid)] == species
        assert int(length) == lengths[cid]
        assert genome_of_species.setdefault(species, bin_id) == bin_id
        assert len(_lineage(int(taxid), parent)) == 7


def test_mmseqs2_output_and_labels_agree(sim: dict) -> None:
    parent, rank, name = _taxdump(sim)
    mm = _tsv(sim["mmseqs2_path"])
    labels = _tsv(sim["labels_path"])
    assert labels[0] == ["contigs", "predictions"]
    assert len(mm) == len(labels) - 1 == 800
    unclassified = 0
    for row, (cid, lineage) in zip(mm, labels[1:], strict=True):
        assert len(row) == 5 and row[0] == cid
        taxid, mm_rank, mm_name, mm_lineage = int(row[1]), row[2], row[3], row[4]
        if taxid == 0:
            assert (mm_rank, mm_name, mm_lineage, lineage) == ("no rank", "unclassified", "", "")
            unclassified += 1
            continue
        assert rank[taxid] == mm_rank and name[taxid] == mm_name
        chain = _lineage(taxid, parent)
        assert mm_lineage == ";".join(f"{RANK_LETTERS[i]}_{name[t]}" for i, t in enumerate(chain))
        assert lineage == ";".join(f"{RANK_LETTERS[i]}__{name[t]}" for i, t in enumerate(chain))
    assert 0 < unclassified < 400


def test_novel_species_never_labelled_correctly(sim: dict) -> None:
    gold = {r[0]: (r[1], r[2] == "true") for r in _tsv(sim["gold_path"])[1:]}
    labels = dict((r[0], r[1]) for r in _tsv(sim["labels_path"])[1:])
    novel_species = {g.split(";")[-1] for g, novel in gold.values() if novel}
    known_species = {g.split(";")[-1] for g, novel in gold.values() if not novel}
    assert novel_species and known_species and not novel_species & known_species
    wrong_species_calls = 0
    for cid, (_truth, novel) in gold.items():
        called = labels[cid].split(";")
        if novel:
            assert called[-1] not in novel_species  # the reference has no novel taxon
            wrong_species_calls += called[-1].startswith("s__")
    assert wrong_species_calls > 0  # confident wrong calls happen, as with MMseqs2
    quality = sim["summary"]["label_quality"]["species"]
    assert quality["novel"]["correct"] == 0
    assert 0.7 <= quality["all"]["precision"] <= 0.95
    assert 0.45 <= quality["all"]["recall"] <= 0.8


def _canonical_kmer_profiles(sequences: list[str], k: int = 4) -> np.ndarray:
    """Reverse-complement-merged k-mer frequencies, computed independently here."""
    code = np.full(256, 4, dtype=np.int64)
    for i, b in enumerate(b"ACGT"):
        code[b] = i
    kmers = np.arange(4**k)
    rc = np.zeros_like(kmers)
    for pos in range(k):
        rc = rc * 4 + (3 - (kmers >> (2 * pos)) & 3)
    canonical = np.minimum(kmers, rc)
    profiles = np.zeros((len(sequences), 4**k))
    for row, seq in enumerate(sequences):
        c = code[np.frombuffer(seq.encode(), dtype=np.uint8)]
        windows = np.lib.stride_tricks.sliding_window_view(c, k)
        ok = (windows < 4).all(axis=1)
        index = (windows[ok] * (4 ** np.arange(k - 1, -1, -1))).sum(axis=1)
        profiles[row] = np.bincount(canonical[index], minlength=4**k)
    return profiles / profiles.sum(axis=1, keepdims=True)


def test_composition_carries_the_tree(sim: dict) -> None:
    gold = {r[0]: r[1].split(";") for r in _tsv(sim["gold_path"])[1:]}
    records = [(n, s) for n, s in _records(sim) if len(s) >= 4000][:300]
    profiles = _canonical_kmer_profiles([s for _, s in records])
    genus = np.array([gold[n][5] for n, _ in records])
    phylum = np.array([gold[n][1] for n, _ in records])
    dist = np.linalg.norm(profiles[:, None, :] - profiles[None, :, :], axis=2)
    off_diagonal = ~np.eye(len(records), dtype=bool)
    same_genus = (genus[:, None] == genus[None, :]) & off_diagonal
    same_phylum_other_genus = (phylum[:, None] == phylum[None, :]) & ~same_genus & off_diagonal
    other_phylum = phylum[:, None] != phylum[None, :]
    assert same_genus.sum() > 50
    within, between, far = (
        dist[same_genus].mean(),
        dist[same_phylum_other_genus].mean(),
        dist[other_phylum].mean(),
    )
    assert within < between < far


def test_sequence_identity_falls_with_divergence() -> None:
    from tdstore.simulate.genomes import evolve_genomes
    from tdstore.simulate.tree import build_tree

    tree = build_tree(40, rng=np.random.default_rng(3))
    genomes = evolve_genomes(tree, np.full(40, 20_000), rng=np.random.default_rng(4), rotate=False)
    assert all(g.dtype == np.uint8 and len(g) == 20_000 and g.max() <= 3 for g in genomes)
    identity: dict[int, list[float]] = {}
    for a, b in itertools.combinations(range(40), 2):
        # The deepest rank the two species share: 5 = same genus, 0 = same domain only.
        shared = int((tree.ancestors[a] == tree.ancestors[b]).sum()) - 1
        identity.setdefault(shared, []).append(float((genomes[a] == genomes[b]).mean()))
    means = [np.mean(identity[r]) for r in sorted(identity)]
    assert 5 in identity and 0 in identity
    assert means == sorted(means)  # closer relatives share more sequence
    assert np.mean(identity[5]) > 0.8 > np.mean(identity[0])


def test_cli_writes_and_reports(cli, tmp_path: Path) -> None:
    result = cli(
        "simulate",
        tmp_path / "sim",
        "--contigs",
        "300",
        "--seed",
        "1",
        "--samples",
        "3",
        "--species",
        "12",
    )
    assert result.exit_code == 0, result.stderr
    assert "300 contigs" in result.stdout
    assert (tmp_path / "sim" / "simulation.json").exists()
    header = (tmp_path / "sim" / "abundance.tsv").read_text().splitlines()[0]
    assert header == "contigname\tS1\tS2\tS3"


def test_cli_rejects_bad_options(cli, tmp_path: Path) -> None:
    result = cli("simulate", tmp_path / "sim", "--contigs", "0")
    assert result.exit_code == 2
    assert "error:" in result.stderr
    assert not (tmp_path / "sim" / "simulation.json").exists()


def test_crash_mid_write_leaves_no_half_file(tmp_path: Path, monkeypatch) -> None:
    from tdstore.simulate import writers

    calls = {"n": 0}
    real_wrap = writers._wrap

    def failing_wrap(seq: np.ndarray) -> bytes:
        calls["n"] += 1
        if calls["n"] > 50:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-FASTA
        return real_wrap(seq)

    # An earlier complete run in the same directory: its summary must not survive.
    simulate(tmp_path, n_contigs=100, seed=1, n_species=6, genome_max=100_000)
    before = (tmp_path / "contigs.fna.gz").read_bytes()
    monkeypatch.setattr(writers, "_wrap", failing_wrap)
    with pytest.raises(KeyboardInterrupt):
        simulate(tmp_path, n_contigs=100, seed=2, n_species=6, genome_max=100_000)
    assert not (tmp_path / "simulation.json").exists()
    assert (tmp_path / "contigs.fna.gz").read_bytes() == before  # old file, whole
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_outcome_shares_match_the_noise_model(sim: dict) -> None:
    outcomes = sim["summary"]["label_outcomes"]
    for group in ("known", "novel"):
        shares = outcomes[group]
        total = sum(shares[k] for k in ("correct", "truncated", "wrong_species", "unclassified"))
        assert total == pytest.approx(1.0, abs=1e-3)
    assert outcomes["novel"]["correct"] == 0.0
    assert outcomes["known"]["correct"] > 0.7
    assert 0.15 < outcomes["novel"]["wrong_species"] < 0.55


def test_cli_defaults_match_the_library() -> None:
    import inspect

    from tdstore.cli.cmd_simulate import simulate as command

    defaults = {
        name: p.default.default if hasattr(p.default, "default") else p.default
        for name, p in inspect.signature(command).parameters.items()
    }
    noise = LabelNoise()
    assert defaults["novel_wrong"] == noise.novel_wrong
    assert defaults["known_wrong"] == noise.known_wrong
    assert defaults["known_truncated"] == noise.known_truncated
    library = inspect.signature(simulate).parameters
    assert defaults["contigs"] == library["n_contigs"].default
    assert defaults["novel_fraction"] == library["novel_fraction"].default
