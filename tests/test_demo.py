"""`tdstore demo` (what `make demo` runs), at a small scale: every step, then full reuse."""

from __future__ import annotations


def test_demo_runs_then_reuses_every_step(cli, tmp_path):
    workdir = tmp_path / "demo"
    args = ("demo", "--workdir", workdir, "--contigs", "1200", "--epochs", "3")
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    assert "per-rank F1 against gold" in first.stdout
    for name in ("mmseqs2 (labels)", "plain", "distilled", "distilled-confident"):
        assert name in first.stdout
    assert (workdir / "plots" / "f1_by_rank.png").exists()
    assert "reused" not in first.stdout

    second = cli(*args)
    assert second.exit_code == 0, second.stderr
    assert second.stdout.count("reused from the store") == 11
    # Same store, same students: the report is identical.
    table = first.stdout.split("per-rank F1")[1].split("plots and")[0]
    assert table == second.stdout.split("per-rank F1")[1].split("plots and")[0]


def test_demo_with_other_data_rebuilds_the_store(cli, tmp_path):
    """Another --contigs/--seed re-simulates, and the store of the old data is not reused."""
    workdir = tmp_path / "demo"
    small = ("demo", "--workdir", workdir, "--epochs", "1", "--contigs")
    assert cli(*small, "600").exit_code == 0
    import tdstore

    first = tdstore.open(workdir / "demo.tdstore").n_contigs
    other = cli(*small, "900")
    assert other.exit_code == 0, other.stderr
    assert "reused" not in other.stdout
    assert tdstore.open(workdir / "demo.tdstore").n_contigs > first
    assert not list(workdir.glob("*.tmp-*"))
