"""Property tests (hypothesis) for lineage parsing, the taxonomy tree and the label parsers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdstore.errors import BadInputError
from tdstore.ingest.labels import parse_mmseqs2, parse_taxometer
from tdstore.taxonomy import RANK_LETTERS, RANKS, Hierarchy, Taxonomy, parse_lineage

# TDSTORE_HYPOTHESIS_EXAMPLES=2000 for a deeper search than the default suite's.
SETTINGS = settings(
    max_examples=int(os.environ.get("TDSTORE_HYPOTHESIS_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# Tests that write a file per example get half as many.
FILE_SETTINGS = settings(SETTINGS, max_examples=max(1, SETTINGS.max_examples // 2))

# Names as tools write them: letters, digits, spaces, dots and dashes (GTDB adds _A suffixes).
WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .-",
    min_size=1,
    max_size=8,
).map(lambda s: s.strip(" .-") or "x")
# A lineage is a path in a random tree: a list of child indices, one per rank.
PATHS = st.lists(
    st.lists(st.integers(0, 2), min_size=0, max_size=len(RANKS)), min_size=1, max_size=12
)


def lineage_of(path: list[int], word: str) -> tuple[str, ...]:
    """GTDB names of a path; the path prefix makes names unique, so the tree is consistent."""
    return tuple(
        f"{RANK_LETTERS[d]}__{word}{'.'.join(map(str, path[: d + 1]))}" for d in range(len(path))
    )


def render(lineage: tuple[str, ...], style: str) -> str:
    if style == "gtdb":
        return ";".join(lineage)
    if style == "mmseqs":  # one underscore, plus no-rank elements MMseqs2 interleaves
        parts = ["-_cellular organisms"]
        for name in lineage:
            parts.append(name.replace("__", "_", 1))
            if name.startswith("d__"):
                parts.append("k_Somekingdom")
        return ";".join(parts)
    return ";".join(name[3:] for name in lineage)  # bare names, placed by position


@SETTINGS
@given(paths=PATHS, word=WORD, style=st.sampled_from(["gtdb", "mmseqs", "bare"]))
def test_consistent_lineages_round_trip(paths, word, style):
    taxonomy = Taxonomy.empty()
    for path in paths:
        lineage = lineage_of(path, word)
        parsed = parse_lineage(render(lineage, style), where="p:1")
        assert parsed == lineage
        taxon = taxonomy.add_lineage(parsed, where="p:1")
        assert taxonomy.lineage_names(taxon) == lineage
        assert taxonomy.depth(taxon) == len(lineage)
    back = Taxonomy.from_table(taxonomy.to_table())
    assert (back.names, back.ranks, back.parents) == (
        taxonomy.names,
        taxonomy.ranks,
        taxonomy.parents,
    )
    assert len(set(taxonomy.names)) == len(taxonomy)


@SETTINGS
@given(
    path=st.lists(st.integers(0, 2), min_size=3, max_size=len(RANKS)),
    word=WORD,
    data=st.data(),
    how=st.sampled_from(["drop", "empty", "bare-prefix"]),
    style=st.sampled_from(["gtdb", "mmseqs"]),
)
def test_any_gap_raises(path, word, data, how, style):
    lineage = list(render(lineage_of(path, word), style).split(";"))
    named = [i for i, e in enumerate(lineage) if e[0] in RANK_LETTERS]
    # A gap strictly inside the lineage: something named must follow it.
    gap = data.draw(st.sampled_from(named[1:-1]))
    if how == "drop":
        del lineage[gap]
    elif how == "empty":
        lineage[gap] = ""
    else:
        lineage[gap] = lineage[gap].split("_")[0] + "__"
    with pytest.raises(BadInputError, match=r"f\.tsv:9: skipped rank"):
        parse_lineage(";".join(lineage), where="f.tsv:9")


@SETTINGS
@given(
    lineages=st.lists(
        st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=4), min_size=1, max_size=8
    )
)
def test_two_parents_raise_exactly_when_a_name_has_two_parents(lineages):
    """Names from a tiny pool collide often; compare with a dictionary of first parents."""
    taxonomy = Taxonomy.empty()
    first_parent: dict[str, str] = {}
    for line, bare in enumerate(lineages, start=1):
        names = tuple(f"{RANK_LETTERS[d]}__{b}" for d, b in enumerate(bare))
        parents = ("root", *names[:-1])
        conflict = next(
            (n for n, p in zip(names, parents, strict=True) if first_parent.get(n, p) != p), None
        )
        if conflict is not None:
            with pytest.raises(BadInputError, match=rf"f:{line}: .*{conflict!r} has two parents"):
                taxonomy.add_lineage(names, where=f"f:{line}")
            return
        taxon = taxonomy.add_lineage(names, where=f"f:{line}")
        assert taxonomy.lineage_names(taxon) == names
        for n, p in zip(names, parents, strict=True):
            first_parent.setdefault(n, p)


@SETTINGS
@given(paths=PATHS, word=WORD)
def test_hierarchy_leaf_ranges_nest(paths, word):
    taxonomy = Taxonomy.empty()
    labels = [taxonomy.add_lineage(lineage_of(p, word), where="h") for p in paths]
    h = Hierarchy.from_labels(taxonomy, labels)
    labelled = {t for t in labels if t != 0}
    if not labelled:
        assert h.n_leaves == 0
        return
    # Every label is a node; leaves are the nodes without children.
    assert labelled <= set(h.node_ids.tolist())
    assert set(h.leaf_ids.tolist()) <= labelled
    for i in range(len(h.node_ids)):
        assert h.start[i] < h.end[i]
        kids = np.flatnonzero(h.node_parent == i)
        if kids.size:  # children partition the parent's leaf range, in order
            assert h.start[kids[0]] == h.start[i] and h.end[kids[-1]] == h.end[i]
            assert (h.start[kids[1:]] == h.end[kids[:-1]]).all()
        else:
            assert h.end[i] - h.start[i] == 1
    domains = np.flatnonzero(h.node_parent == -1)
    assert h.start[domains[0]] == 0 and h.end[domains[-1]] == h.n_leaves


RECORDS = st.lists(
    st.tuples(PATHS.map(lambda ps: ps[0]), st.sampled_from([None, True, False])),
    min_size=1,
    max_size=20,
)


@FILE_SETTINGS
@given(records=RECORDS, word=WORD, crlf=st.booleans(), gold=st.booleans())
def test_taxometer_file_round_trip(tmp_path_factory, records, word, crlf, gold):
    end = "\r\n" if crlf else "\n"
    header = "contigs\tpredictions\tnovel" if gold else "contigs\tpredictions"
    rows = []
    for i, (path, novel) in enumerate(records):
        row = f"c{i}\t{render(lineage_of(path, word), 'gtdb')}"
        if gold:
            row += "\t" + ("" if novel is None else str(novel).lower())
        rows.append(row)
    file = tmp_path_factory.mktemp("t") / "t.tsv"
    file.write_bytes(end.join([header, *rows, ""]).encode())
    parsed = list(parse_taxometer(file))
    assert [r.contig_id for r in parsed] == [f"c{i}" for i in range(len(records))]
    assert [r.lineage for r in parsed] == [lineage_of(p, word) for p, _ in records]
    assert [r.novel for r in parsed] == [n if gold else None for _, n in records]


@FILE_SETTINGS
@given(records=RECORDS, word=WORD, protein=st.booleans())
def test_mmseqs2_file_round_trip(tmp_path_factory, records, word, protein):
    rows = []
    for i, (path, _) in enumerate(records):
        lineage = lineage_of(path, word)
        extra = "\t3\t2\t2\t0.67" if protein else ""
        if lineage:
            rows.append(
                f"q{i}\t{100 + i}\t{RANKS[len(lineage) - 1]}\tx{extra}\t{render(lineage, 'mmseqs')}"
            )
        else:
            rows.append(f"q{i}\t0\tno rank\tunclassified{extra}\t")
    file = tmp_path_factory.mktemp("m") / "lca.tsv"
    file.write_text("\n".join(rows) + "\n")
    parsed = list(parse_mmseqs2(file))
    assert [r.lineage for r in parsed] == [lineage_of(p, word) for p, _ in records]


LINE = st.lists(
    st.sampled_from(["contigs", "predictions", "a", "d__A", "p_B", ";", "\t", "0", "@@", "#", " "]),
    max_size=8,
).map("".join)


@FILE_SETTINGS
@given(
    lines=st.lists(LINE, max_size=6),
    junk=st.binary(max_size=20),
    format=st.sampled_from(["taxometer", "mmseqs2", "cami"]),
)
def test_parsers_fail_only_with_bad_input_errors(tmp_path_factory, lines, junk, format):
    """Whatever the bytes, a parser yields records or raises one BadInputError naming the file."""
    from tdstore.ingest.labels import read_labels

    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "nodes.dmp").write_text("1\t|\t1\t|\tno rank\t|\n2\t|\t1\t|\tsuperkingdom\t|\n")
    (folder / "names.dmp").write_text("2\t|\tBacteria\t|\t\t|\tscientific name\t|\n")
    path = folder / "in.tsv"
    path.write_bytes("\n".join(lines).encode() + junk)
    try:
        records = list(read_labels(path, format, taxdump=folder if format == "cami" else None))
    except BadInputError as exc:
        assert str(exc).startswith(str(path))
        return
    assert records and all(r.contig_id for r in records)


@SETTINGS
@given(
    lineages=st.lists(
        st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=4), min_size=1, max_size=8
    )
)
def test_homonyms_keep_every_lineage_apart_and_stable(lineages):
    """With homonyms collected, lineages import unless a clash recurs below a homonym: each
    keeps its own chain (names as given, a clash qualified after its parent, never more
    than one rank per lineage), and the same lineage always lands on the same taxon."""
    taxonomy = Taxonomy.empty()
    homonyms: list[tuple[str, str, str]] = []
    seen: dict[tuple[str, ...], int] = {}
    for line, bare in enumerate(lineages, start=1):
        names = tuple(f"{RANK_LETTERS[d]}__{b}" for d, b in enumerate(bare))
        try:
            taxon = taxonomy.add_lineage(names, where=f"f:{line}", homonyms=homonyms)
        except BadInputError as error:
            # Only one rank of a lineage may be a homonym; a second clash below it is
            # another placement of the same taxa, and refused.
            assert "below the homonym" in str(error)
            return
        got = taxonomy.lineage_names(taxon)
        assert tuple(n.split(" (", 1)[0] for n in got) == names
        assert sum(n.endswith(")") for n in got) <= 1
        assert seen.setdefault(names, taxon) == taxon
    assert len(set(taxonomy.names)) == len(taxonomy.names)
    assert all(new.startswith(old + " (") for old, new, _ in homonyms)
