"""Student benchmark: vamb taxometer vs tdstore train (plain, then distilled), side by side.

One simulated metagenome; vamb 5.0.4 runs from its own venv (never in CI). Each tool
runs as a separate process, timed by ``/usr/bin/time -v`` or, where that is missing, by a
Python parent's ``getrusage`` (wall time, peak RSS); ``--device cuda`` runs both on the GPU
(``vamb taxometer --cuda``, ``tdstore train --device cuda``). F1 per
rank is computed here against the simulator's gold standard with the TaxDistill
definitions (per contig; a call counts if its score > 0.8; precision =
correct / (correct + wrong); recall = correct / all gold contigs)::

    python benchmarks/student.py --contigs 20000 --epochs 100 --fast-epochs 8 --workdir /tmp/bench-student
    python benchmarks/student.py --contigs 20000 --runs plain,kd-post --skip-vamb
    python benchmarks/student.py --contigs 200000 --epochs 10 --plain-only --device cuda \
        --vamb "python3 -m vamb" --threads 8

Preparation (simulate, ingest, labels, kmer embeddings, teach: ``kt`` the teacher alone,
``kp`` its label posterior) is reused from the workdir and not timed. Runs: ``plain``
(--no-teacher), ``kd`` (from ``kt``), ``kd-post`` (from ``kp``), all with the same epochs
as vamb; ``plain-fast`` and ``kd-fast`` (from ``kp``) are the short schedule
(``--fast-epochs``, batch 256) that the time-to-vamb's-F1 figure is about. The summary
ends with, for each tdstore run, the ranks where its F1 falls below vamb's and its wall
time as a share of vamb's."""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TDSTORE = str(Path(sys.executable).with_name("tdstore"))
# Where /usr/bin/time is missing (GPU images), a Python parent reads the child's peak RSS.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(f'Maximum resident set size (kbytes): {kib}', file=sys.stderr)\n"
    "sys.exit(rc)\n"
)
RANKS = ("domain", "phylum", "class", "order", "family", "genus", "species")
THRESHOLD = 0.8
# Each full-length run's teacher: none, the k-mer teacher alone (kt), its label posterior (kp).
RUN_TEACHER = {"plain": None, "kd": "kt", "kd-post": "kp"}
TEACH_ARGS = {"kt": [], "kp": ["--label-posterior"]}


# The quick recipe's runs (--fast-epochs, batch 256) and the full-length run each repeats.
FAST_RUNS = {"plain-fast": "plain", "kd-fast": "kd-post"}


def run_args(name: str) -> list[str]:
    teacher = RUN_TEACHER[name]
    return ["--no-teacher"] if teacher is None else ["--soft-labels", teacher]


def sh(args: list[str], log: Path | None = None, threads: int = 1) -> dict:
    """Run a command, timed; returns wall seconds and peak RSS (MiB)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TDSTORE_QUIET": "1",
    }
    timer = (
        ["/usr/bin/time", "-v"]
        if shutil.which("/usr/bin/time")
        else [sys.executable, "-c", _MEASURE]
    )
    started = time.perf_counter()
    proc = subprocess.run([*timer, *args], capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if log is not None:
        log.write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall_s": wall, "peak_rss_mib": int(peak.group(1)) / 1024 if peak else None}


def prepare(
    work: Path, n_contigs: int, seed: int, teachers: tuple[str, ...], device: str = "cpu"
) -> Path:
    """Simulate, ingest, import labels, then the kmer teachers ``teachers`` needs.

    Each step is skipped when its output is already there, so a workdir prepared by hand
    or by an earlier run (a 200k simulation costs minutes) is reused.
    """
    store = work / "s.tdstore"
    sim = work / "sim"
    steps: list[tuple[Path | None, list[str]]] = [
        (sim / "simulation.json", ["simulate", str(sim), "--contigs", str(n_contigs), "--seed", str(seed)]),
        (store / "manifest.json", ["init", str(store)]),
        (store / "core", ["ingest", str(store), "--fasta", str(sim / "contigs.fna.gz"),
                          "--abundance", str(sim / "abundance.tsv")]),
        (store / "labels" / "mmseqs.parquet",
         ["labels", "import", str(store), "mmseqs", str(sim / "labels.tsv"), "--format", "taxometer"]),
        (store / "labels" / "gold.parquet",
         ["labels", "import", str(store), "gold", str(sim / "gold.tsv"), "--format", "taxometer"]),
    ]  # fmt: skip
    if teachers:  # always run: embed resumes an unfinished set and skips a finished one
        steps.append((None, ["embed", str(store), "--model", "kmer:4"]))
    for name in teachers:
        teach = ["teach", str(store), "--embeddings", "kmer4", "--labels", "mmseqs", "--name", name]
        steps.append(
            (
                store / "soft_labels" / f"{name}.parquet",
                [*teach, *TEACH_ARGS[name], "--device", device],
            )
        )
    for done, step in steps:
        if done is not None and done.exists():
            continue
        print("prepare:", " ".join(step[:2]), flush=True)
        sh([TDSTORE, *step], threads=2)
    return store


def read_gold(path: Path) -> tuple[dict[str, list[str]], dict[str, bool]]:
    lineages, novel = {}, {}
    with open(path) as handle:
        header = handle.readline().rstrip("\n").split("\t")
        has_novel = "novel" in header
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            lineages[fields[0]] = [n for n in fields[1].split(";") if n]
            if has_novel:
                novel[fields[0]] = fields[2].strip().lower() in {"true", "1", "yes"}
    return lineages, novel


def _norm(name: str) -> str:
    # Compare names with their rank prefix normalised (d__X and d_X are the same taxon).
    return re.sub(r"^([a-z])_{1,2}", r"\1__", name)


def f1_table(
    calls: dict[str, list[tuple[str, float]]], gold: dict[str, list[str]], novel: dict[str, bool]
) -> dict:
    """Per-rank P/R/F1 over gold contigs, plus known-species F1 and novel wrong-species rate.

    A call above the threshold is correct when it names the gold taxon at its rank, wrong
    otherwise (also where the gold lineage stops above that rank).
    """
    contigs = sorted(c for c in gold if gold[c])
    norm = functools.lru_cache(maxsize=None)(_norm)
    truth = np.full((len(contigs), len(RANKS)), "", dtype=object)
    called = np.full((len(contigs), len(RANKS)), "", dtype=object)
    for i, contig in enumerate(contigs):
        for r, name in enumerate(gold[contig][: len(RANKS)]):
            truth[i, r] = norm(name)
        for r, (name, score) in enumerate(calls.get(contig, [])[: len(RANKS)]):
            if score > THRESHOLD:
                called[i, r] = norm(name)
    is_novel = np.array([novel.get(c, False) for c in contigs], dtype=bool)
    groups = {"all": np.ones(len(contigs), dtype=bool), "known": ~is_novel, "novel": is_novel}
    out: dict = {}
    for r, rank in enumerate(RANKS):
        made = called[:, r] != ""
        right = made & (called[:, r] == truth[:, r])
        has_truth = truth[:, r] != ""
        for group, members in groups.items():
            correct = int((right & members).sum())
            wrong = int((made & ~right & members).sum())
            precision = correct / max(1, correct + wrong)
            recall = correct / max(1, int((has_truth & members).sum()))
            f1 = 2 * precision * recall / max(precision + recall, 1e-12)
            out.setdefault(group, {})[rank] = {
                "f1": round(f1, 4),
                "precision": round(precision, 4),
                "recall": round(recall, 4),
                "wrong": wrong,
                "n": int(members.sum()),
            }
    return out


def vamb_calls(path: Path) -> dict[str, list[tuple[str, float]]]:
    calls = {}
    with open(path) as handle:
        handle.readline()
        for line in handle:
            contig, names, scores = line.rstrip("\n").split("\t")
            names_l = [n for n in names.split(";") if n]
            scores_l = [float(s) for s in scores.split(";") if s]
            calls[contig] = list(zip(names_l, scores_l, strict=True))
    return calls


def tdstore_calls(store: Path, run: str, column: str) -> dict[str, list[tuple[str, float]]]:
    sys.path.insert(0, str(ROOT))
    import tdstore
    from tdstore.student.runs import load_predictions

    opened = tdstore.open(store)
    names = opened.taxonomy().names
    table, _ = load_predictions(opened, run)
    calls = {}
    for contig, ids, scores in zip(
        table.column("contig_id").to_pylist(),
        table.column("lineage_ids").to_pylist(),
        table.column(column).to_pylist(),
        strict=True,
    ):
        calls[contig] = [(names[t], s) for t, s in zip(ids, scores, strict=True)]
    return calls


def vamb_epoch_rates(log: Path, n_rows: int) -> list[float]:
    stamps = []
    for line in log.read_text().splitlines():
        match = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*Epoch: \d+\t", line)
        start = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) .*N labels:", line)
        for m in (start, match):
            if m:
                stamps.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    gaps = np.diff(stamps)
    return [n_rows / g for g in gaps if g > 0]


def run_tdstore(
    store: Path, name: str, args: list[str], work: Path, threads: int, device: str
) -> dict:
    train = [TDSTORE, "train", str(store), "--labels", "mmseqs", "--name", name, "--overwrite"]
    result = sh(
        [*train, "--device", device, *args],
        log=work / f"{name}.log",
        threads=threads,
    )
    doc = json.loads((store / "runs" / name / "run.json").read_text())
    rates = [h["samples_per_s"] for h in doc["history"]]
    result.update(
        epochs_run=len(doc["history"]),
        best_epoch=doc["best_epoch"],
        train_s=doc["timings"]["train_s"] + doc["timings"].get("refit_s", 0.0),
        predict_s=doc["timings"]["predict_s"],
        samples_per_s=float(np.median(rates)),
        rows=doc["counts"]["train_rows"],
        **{k: doc["timings"][k] for k in ("gpu", "peak_gpu_mib") if k in doc["timings"]},
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contigs", type=int, default=20000)
    parser.add_argument(
        "--epochs", type=int, default=100, help="vamb's and tdstore's (default 100)"
    )
    parser.add_argument(
        "--fast-epochs", type=int, default=0, help="also plain-fast and kd-fast, this long"
    )
    parser.add_argument("--fast-batch-size", type=int, default=256)
    parser.add_argument(
        "--runs",
        default="plain,kd,kd-post",
        help="comma-separated tdstore runs at --epochs: plain, kd, kd-post",
    )
    parser.add_argument("--seed", type=int, default=5, help="the simulation's seed")
    parser.add_argument(
        "--seeds",
        type=lambda text: [int(s) for s in text.split(",")],
        default=[0],
        help="training seeds of the full-length runs; runs of later seeds are named NAME-sSEED",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-student"))
    parser.add_argument(
        "--vamb", default="/tmp/vambenv/bin/vamb", help="vamb's command (may hold arguments)"
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda: both tools (vamb --cuda) and the teacher"
    )
    parser.add_argument("--skip-vamb", action="store_true")
    parser.add_argument(
        "--plain-only", action="store_true", help="no teacher: vamb and tdstore plain only"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    wanted = ["plain"] if args.plain_only else [r for r in args.runs.split(",") if r]
    unknown = sorted(set(wanted) - set(RUN_TEACHER))
    if unknown:
        parser.error(f"unknown --runs {unknown}; choose from {sorted(RUN_TEACHER)}")
    fast_runs = {} if not args.fast_epochs else {
        fast: full for fast, full in FAST_RUNS.items()
        if not args.plain_only or RUN_TEACHER[full] is None
    }  # fmt: skip
    teachers = {RUN_TEACHER[r] for r in [*wanted, *fast_runs.values()]} - {None}
    store = prepare(work, args.contigs, args.seed, tuple(sorted(teachers)), device=args.device)
    gold, novel = read_gold(work / "sim" / "gold.tsv")
    # Only contigs the store keeps (>= 2 kbp; vamb drops the same with -m 2000).
    sys.path.insert(0, str(ROOT))
    import tdstore

    kept = set(tdstore.open(store).contig_ids().tolist())
    gold = {c: lineage for c, lineage in gold.items() if c in kept}
    labels = vamb_calls_from_labels(work / "sim" / "labels.tsv")
    results: dict = {
        "contigs": args.contigs,
        "kept": len(gold),
        "epochs": args.epochs,
        "threads": args.threads,
        "device": _device_name(args.device),
        "f1": {"labels": f1_table(labels, gold, novel)},
        "runs": {},
    }
    if not args.skip_vamb:
        out = work / "vamb"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        timing = sh(
            [
                *shlex.split(args.vamb),
                "taxometer",
                "--outdir",
                str(out),
                "--fasta",
                str(work / "sim" / "contigs.fna.gz"),
                "--abundance_tsv",
                str(work / "sim" / "abundance.tsv"),
                "--taxonomy",
                str(work / "sim" / "labels.tsv"),
                "-pe",
                str(args.epochs),
                "-pt",
                "1024",
                "-p",
                str(args.threads),
                "--seed",
                "0",
                *(["--cuda"] if args.device.startswith("cuda") else []),
            ],
            log=work / "vamb.log",
            threads=args.threads,
        )
        rates = vamb_epoch_rates(out / "log.txt", len(gold))
        timing.update(samples_per_s=float(np.median(rates)) if rates else None, rows=len(gold))
        results["runs"]["vamb"] = timing
        results["f1"]["vamb"] = f1_table(vamb_calls(out / "results_taxometer.tsv"), gold, novel)
        print("vamb", json.dumps(timing), flush=True)
    plans = []
    for i, seed in enumerate(args.seeds):  # other seeds: the spread that a difference must beat
        plans += [
            (name if i == 0 else f"{name}-s{seed}", [*run_args(name), "--epochs", str(args.epochs),
             "--seed", str(seed)])
            for name in wanted
        ]  # fmt: skip
    fast = ["--epochs", str(args.fast_epochs), "--batch-size", str(args.fast_batch_size)]
    plans += [(name, [*run_args(full), *fast]) for name, full in fast_runs.items()]
    for name, extra in plans:
        timing = run_tdstore(store, name, extra, work, args.threads, args.device)
        results["runs"][name] = timing
        results["f1"][name] = f1_table(tdstore_calls(store, name, "lineage_scores"), gold, novel)
        results["f1"][name + ":raw"] = f1_table(
            tdstore_calls(store, name, "raw_scores"), gold, novel
        )
        print(name, json.dumps(timing), flush=True)
    print_summary(results)
    target = args.json or work / "results.json"
    target.write_text(json.dumps(results, indent=2))
    print("results:", target)


def _device_name(device: str) -> str:
    if not device.startswith("cuda"):
        return f"cpu ({os.cpu_count()} cores visible)"
    import torch

    return torch.cuda.get_device_name(device)


def vamb_calls_from_labels(path: Path) -> dict[str, list[tuple[str, float]]]:
    """The input labels as calls with score 1 at every rank of their lineage."""
    calls = {}
    with open(path) as handle:
        handle.readline()
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            calls[fields[0]] = [(n, 1.0) for n in fields[1].split(";") if n]
    return calls


def print_summary(results: dict) -> None:
    sources = list(results["f1"])
    print("\nF1 per rank (all gold contigs, score > 0.8)")
    print("| rank | " + " | ".join(sources) + " |")
    print("|---" * (len(sources) + 1) + "|")
    for rank in RANKS:
        cells = [f"{results['f1'][s]['all'][rank]['f1']:.3f}" for s in sources]
        print(f"| {rank} | " + " | ".join(cells) + " |")
    known = [f"{results['f1'][s]['known']['species']['f1']:.3f}" for s in sources]
    print("| known species F1 | " + " | ".join(known) + " |")
    wrong = []
    for s in sources:
        novel = results["f1"][s]["novel"]["species"]
        wrong.append(f"{novel['wrong'] / max(1, novel['n']):.3f}")
    print("| novel: wrong species / novel contigs | " + " | ".join(wrong) + " |")
    print("\n| tool | wall s | train s | samples/s (median epoch) | peak RSS MiB | epochs |")
    print("|---|---|---|---|---|---|")
    for name, run in results["runs"].items():
        print(
            f"| {name} | {run['wall_s']:.1f} | {run.get('train_s', float('nan')):.1f} | "
            f"{run.get('samples_per_s') or float('nan'):.0f} | {run['peak_rss_mib']:.0f} | "
            f"{run.get('epochs_run', results['epochs'])} |"
        )
    if "vamb" in results["runs"]:
        print_against_vamb(results)


def print_against_vamb(results: dict) -> None:
    """Per tdstore run: ranks where F1 < vamb's (3 decimals), and wall time / vamb's wall."""
    vamb_f1 = results["f1"]["vamb"]["all"]
    vamb_wall = results["runs"]["vamb"]["wall_s"]
    print("\n| tdstore run | ranks below vamb's F1 | wall / vamb wall | samples/s / vamb's |")
    print("|---|---|---|---|")
    for name, run in results["runs"].items():
        if name == "vamb":
            continue
        f1 = results["f1"][name]["all"]
        below = [
            f"{rank} ({f1[rank]['f1']:.3f} < {vamb_f1[rank]['f1']:.3f})"
            for rank in RANKS
            if round(f1[rank]["f1"], 3) < round(vamb_f1[rank]["f1"], 3)
        ]
        rate = (run.get("samples_per_s") or 0) / (results["runs"]["vamb"]["samples_per_s"] or 1)
        print(
            f"| {name} | {', '.join(below) or 'none'} | {run['wall_s'] / vamb_wall:.2f}x | "
            f"{rate:.2f}x |"
        )


if __name__ == "__main__":
    main()
