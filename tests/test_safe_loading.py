"""Safe loading: no pickle, no foreign code, no escaping names, no writing SQL.

- The package never unpickles: no ``pickle.load``, no ``torch.load`` without
  ``weights_only=True``, no ``np.load(allow_pickle=True)``, no ``torch.save``, no
  ``eval``/``exec``, no hard-coded ``trust_remote_code=True`` (an AST scan).
- Code in a model directory (``auto_map`` in config.json or tokenizer_config.json, a
  pickled ``pytorch_model.bin``) never runs without ``--trust-remote-code``.
- Run, subset, label-set, embedding and soft-label names cannot leave the store.
- ``tdstore sql`` cannot write or read outside the store.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from crashkit import raw_digests, step_env, tiny_model

import tdstore

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("tdstore", "cli", "schemas", "pipelines")
BAD = Path(__file__).parent / "data" / "bad"


# ----- no unpickling in the package ----------------------------------------------------------
def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def unsafe_calls(source: str) -> list[str]:
    """Calls that can run code from data: '<line>: <what>' for each."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name == "torch.load" and not _keyword_true(node, "weights_only"):
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif name in {
            "pickle.load",
            "pickle.loads",
            "dill.load",
            "dill.loads",
            "joblib.load",
        } or name in {"shelve.open", "marshal.load", "marshal.loads"}:
            found.append(f"{node.lineno}: {name}")
        elif name in {"np.load", "numpy.load"} and _keyword_true(node, "allow_pickle"):
            found.append(f"{node.lineno}: {name}(allow_pickle=True)")
        elif name in {"torch.save"}:
            found.append(f"{node.lineno}: torch.save (weights are safetensors)")
        elif name in {"eval", "exec"}:
            found.append(f"{node.lineno}: {name}")
        elif _keyword_true(node, "trust_remote_code"):
            found.append(f"{node.lineno}: trust_remote_code=True hard-coded")
    return found


def test_scanner_finds_planted_calls():
    planted = (
        "import torch, pickle, numpy as np\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
        "np.load(p, allow_pickle=True)\ntorch.save(m, p)\neval('1')\n"
        "AutoModel.from_pretrained(p, trust_remote_code=True)\n"
        "torch.load(p, weights_only=True)\nnp.load(p)\n"
    )
    assert [f.split(":")[0] for f in unsafe_calls(planted)] == [str(n) for n in range(2, 9)]


def test_package_never_unpickles():
    problems = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for problem in unsafe_calls(path.read_text()):
                problems.append(f"{path.relative_to(ROOT)}:{problem}")
    assert problems == []


# ----- model directories -------------------------------------------------------------------------
EVIL = """
import os
from pathlib import Path
Path(os.environ["TDSTORE_TEST_MARKER"]).write_text("the model directory's code ran")
from transformers import MistralConfig, MistralModel, PreTrainedTokenizerFast
class EvilConfig(MistralConfig):
    model_type = "{model_type}"
class EvilModel(MistralModel):
    config_class = EvilConfig
class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


def _with_code(good: Path, target: Path, model_type: str) -> Path:
    shutil.copytree(good, target)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (target / "config.json").write_text(json.dumps(config))
    (target / "evil.py").write_text(EVIL.format(model_type=model_type))
    return target


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # unpickling would run os.system(...)
        return (os.system, (f"echo pickle-ran > {self.marker}",))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("models")
    marker = root / "MARKER"
    good = tiny_model(tmp_path_factory)
    out = {"marker": marker, "root": root}
    # auto_map to a model type transformers does not know: only the directory's code has it.
    out["custom"] = _with_code(good, root / "custom", "evilnet")
    # auto_map on a known type: transformers uses its own class, never the directory's.
    out["shadowing"] = _with_code(good, root / "shadowing", "mistral")
    tok = shutil.copytree(good, root / "custom-tokenizer")
    (tok / "tokenizer.json").unlink()
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    config["tokenizer_class"] = "EvilTokenizer"
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    (tok / "evil.py").write_text(EVIL.format(model_type="mistral"))
    out["custom-tokenizer"] = tok
    pickled = shutil.copytree(good, root / "pickled")
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    torch.save(
        {"model.embed_tokens.weight": torch.zeros(64, 32), "x": _Evil(str(marker))},
        pickled / "pytorch_model.bin",
    )
    out["pickled"] = pickled
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from tdstore.cli.main import main

    path = tmp_path_factory.mktemp("safe") / "s"
    fasta, abundance = BAD / "good.fna", BAD / "good_abundance.tsv"
    assert (
        main(
            [
                "ingest",
                str(path),
                "--fasta",
                str(fasta),
                "--abundance",
                str(abundance),
                "--min-length",
                "100",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "labels",
                "import",
                str(path),
                "mmseqs",
                str(BAD / "labels_good.tsv"),
                "-f",
                "taxometer",
            ]
        )
        == 0
    )
    assert main(["embed", str(path), "--model", "kmer:4"]) == 0
    return path


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TDSTORE_QUIET", "1")


@pytest.fixture
def marker(monkeypatch, models):
    """Where the model directories' code would leave its mark (absent before each test)."""
    monkeypatch.setenv("TDSTORE_TEST_MARKER", str(models["marker"]))
    models["marker"].unlink(missing_ok=True)
    return models["marker"]


@pytest.mark.parametrize("variant", ["custom", "custom-tokenizer", "pickled"])
def test_model_code_never_runs_without_trust(variant, models, marker, store, cli, tmp_path):
    copy = shutil.copytree(store, tmp_path / "s")
    before = raw_digests(copy)
    result = cli("embed", copy, "--model", models[variant], "--name", "x")
    assert result.exit_code == 7, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {models[variant]}"), result.stderr
    assert not marker.exists()
    if variant != "pickled":  # refused before the set is created (see report: pickled loads late)
        assert raw_digests(copy) == before


def test_known_architecture_ignores_the_directorys_code(models, marker, store, cli, tmp_path):
    copy = shutil.copytree(store, tmp_path / "s")
    result = cli("embed", copy, "--model", models["shadowing"], "--name", "x")
    assert result.exit_code in (0, 7), result.stderr
    assert not marker.exists()


def test_trust_remote_code_runs_it(models, marker, store, tmp_path):
    """The fixture is real: with the flag the directory's code runs (own HF cache)."""
    copy = shutil.copytree(store, tmp_path / "s")
    env = step_env(TDSTORE_TEST_MARKER=str(models["marker"]), HF_HOME=str(tmp_path / "hf"))
    args = [
        "embed",
        str(copy),
        "--model",
        str(models["custom"]),
        "--name",
        "x",
        "--trust-remote-code",
    ]
    subprocess.run(
        [sys.executable, "-m", "tdstore.cli.main", *args], env=env, capture_output=True, timeout=600
    )
    assert marker.exists()


def _more_layers(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (directory / "config.json").write_text(json.dumps(config))


def _truncated(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.mark.parametrize("damage", [_more_layers, _truncated], ids=["more-layers", "truncated"])
def test_weights_that_do_not_load_exactly_are_exit_7(
    damage, store, cli, tmp_path, tmp_path_factory
):
    """Random initialisation of missing weights, or a SafetensorError traceback, was exit 0/1."""
    copy = shutil.copytree(store, tmp_path / "s")
    model = shutil.copytree(tiny_model(tmp_path_factory), tmp_path / "model")
    damage(model)
    result = cli("embed", copy, "--model", model, "--name", "x", "--device", "cpu")
    assert result.exit_code == 7, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}: "), result.stderr
    assert "Traceback" not in result.stderr
    # Refused before the set is created (inspect_model, or loading the model first).
    assert not (copy / "embeddings" / "x.zarr").exists()


# ----- names cannot leave the store ----------------------------------------------------------
BAD_NAMES = ["../x", "/tmp/x", "a/b", ".."]  # the character rules: test_store_core


def _name_commands(store: Path, name: str) -> list[list[str]]:
    s = str(store)
    return [
        ["labels", "import", s, name, str(BAD / "labels_good.tsv"), "-f", "taxometer"],
        ["labels", "show", s, name],
        ["embed", s, "--model", "kmer:4", "--name", name],
        ["teach", s, "--embeddings", "kmer4", "--labels", "mmseqs", "--name", name],
        ["teach", s, "--embeddings", name, "--labels", "mmseqs"],
        ["train", s, "--labels", "mmseqs", "--name", name, "--no-teacher"],
        ["train", s, "--labels", name, "--no-teacher"],
        ["subset", "create", s, name, "--where", "length > 0"],
        ["subset", "show", s, name],
        ["subset", "drop", s, name],
        ["predict", s, name],
        ["export", s, name, "--format", "taxometer", "--output", str(store.parent / "out.tsv")],
    ]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_cannot_escape(name, store, cli, tmp_path):
    root = tmp_path / "root"
    copy = shutil.copytree(store, root / "s")
    victim = root / "x"
    victim.write_text("not yours")
    (root / "a").mkdir()
    before = raw_digests(root)
    for argv in _name_commands(copy, name):
        result = cli(*argv)
        assert result.exit_code == 2, (argv, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 or "Usage" in result.stderr, (argv, result.stderr)
    assert raw_digests(root) == before


# ----- SQL cannot write or read outside the store ----------------------------------------------
@pytest.mark.parametrize(
    "query",
    [
        "COPY (SELECT * FROM contigs) TO '{out}'",
        "EXPORT DATABASE '{dir}'",
        "ATTACH '{out}' AS x",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        "CREATE TABLE t AS SELECT 1",
        "SELECT * FROM read_parquet('{outside}')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_csv('{outside_csv}')",
        "SELECT * FROM glob('/*')",
        "CALL pragma_version()",
        "PRAGMA database_list",
    ],
)
def test_sql_cannot_write_or_read_outside(query, store, cli, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"secret": [1]}), outside)
    (tmp_path / "outside.csv").write_text("secret\n1\n")
    text = query.format(
        out=tmp_path / "x.out",
        dir=tmp_path / "dump",
        outside=outside,
        outside_csv=tmp_path / "outside.csv",
    )
    before = raw_digests(store)
    result = cli("sql", store, text)
    assert result.exit_code == 2, (text, result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: SQL")
    assert "secret" not in result.stdout
    assert not (tmp_path / "x.out").exists() and not (tmp_path / "dump").exists()
    assert raw_digests(store) == before


def test_store_weights_are_safetensors(store):
    """Nothing tdstore wrote is a pickle or a torch zip (the archive has runs and heads)."""
    archives = Path(__file__).parent / "data" / "archives"
    roots = [store, *[p for p in archives.glob("*") if p.is_dir()]]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                head = path.read_bytes()[:4]
                assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), path
                assert head != b"PK\x03\x04", path
                assert path.suffix not in {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt"}, path
    assert tdstore.open(store).n_contigs == 6
