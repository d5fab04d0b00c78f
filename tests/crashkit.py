"""Crash-safety harness: run a tdstore step as a subprocess, SIGKILL it, check what is left.

Kill points come from tdstore._killpoints (publication and progress points, chosen by
number) or from a timer (any instruction). A trial copies a prepared store, kills the
step there, checks the store, re-runs the step and compares the result with an
uninterrupted run's::

    points = trace_points(step, template)           # the step's numbered kill points
    outcome = kill_trial(step, template, work, kill_at=points[3].n)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STORE = "{store}"  # placeholder in a step's argv
# JSON keys that differ between two identical runs (clocks, hosts), left out of digests.
VOLATILE_KEYS = {"created", "ingested_at", "imported_at", "finished", "started", "host"}
STEP_TIMEOUT_S = 600


@dataclass(frozen=True)
class KillPoint:
    n: int
    tag: str
    seconds: float  # since the step's process imported tdstore


@dataclass
class Step:
    """One CLI step: argv with ``{store}``, and what its result is."""

    name: str
    argv: list[str]
    # Files whose digests must equal an uninterrupted run's (relative to the store).
    compare: Callable[[Path], dict[str, str]]
    # True when the step's object is published (a re-run would refuse: exists).
    published: Callable[[Path], bool] = field(default=lambda store: False)

    def args(self, store: Path) -> list[str]:
        return [a.replace(STORE, str(store)) for a in self.argv]


def step_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("TDSTORE_KILL_AT", "TDSTORE_KILL_TRACE"):
        env.pop(key, None)
    # One thread: deterministic floating point and no contention on shared CI cores.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TDSTORE_QUIET="1")
    env.update(extra)
    return env


def run_step(
    step: Step,
    store: Path,
    *,
    kill_at: int | None = None,
    kill_after: float | None = None,
    trace: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the step in a fresh interpreter; SIGKILL it at a kill point or after a delay.

    ``kill_after`` counts from the step's first kill point (its imports done), so timed
    kills land in the work whatever the machine's load.
    """
    extra = {}
    if kill_at is not None:
        extra["TDSTORE_KILL_AT"] = str(kill_at)
    if kill_after is not None and trace is None:
        trace = store.parent / f"{store.name}.killtrace"
        trace.unlink(missing_ok=True)
    if trace is not None:
        extra["TDSTORE_KILL_TRACE"] = str(trace)
    command = [sys.executable, "-m", "tdstore.cli.main", *step.args(store)]
    process = subprocess.Popen(
        command, env=step_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if kill_after is not None:
        assert trace is not None
        while process.poll() is None and not (trace.exists() and trace.stat().st_size):
            time.sleep(0.01)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=STEP_TIMEOUT_S)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def trace_points(step: Step, template: Path, work: Path) -> tuple[list[KillPoint], float]:
    """The step's kill points and wall time, from one uninterrupted traced run on a copy."""
    store = fresh_copy(template, work / f"trace-{step.name}")
    trace = work / f"trace-{step.name}.tsv"
    trace.unlink(missing_ok=True)
    started = time.monotonic()
    done = run_step(step, store, trace=trace)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    points = []
    for line in trace.read_text().splitlines():
        n, tag, seconds = line.split("\t")
        points.append(KillPoint(int(n), tag, float(seconds)))
    return points, wall


def tiny_simulation(directory: Path, seed: int) -> dict[str, Any]:
    """The few-second metagenome the crash and concurrency tests run their steps on."""
    from tdstore.simulate import simulate

    return simulate(
        directory,
        n_contigs=160,
        seed=seed,
        n_species=8,
        n_samples=2,
        genome_min=20_000,
        genome_max=50_000,
    )


def fresh_copy(template: Path, target: Path) -> Path:
    """A copy of a prepared store (or an absent path for steps that create the store)."""
    if target.exists():
        shutil.rmtree(target)
    if template.exists():
        shutil.copytree(template, target, ignore=shutil.ignore_patterns(".locks"))
    return target


# ----- digests -------------------------------------------------------------------------------
def drop_volatile(value: Any, ignore: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, dict):
        return {
            k: drop_volatile(v, ignore)
            for k, v in value.items()
            if k not in VOLATILE_KEYS and k not in ignore and not k.endswith("seconds")
        }
    if isinstance(value, list):
        return [drop_volatile(v, ignore) for v in value]
    return value


def file_digest(path: Path, ignore: frozenset[str] = frozenset()) -> str:
    """sha256 of the bytes; of JSON documents, without clock and host fields (and ``ignore``)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        stable = drop_volatile(json.loads(data), ignore)
        data = json.dumps(stable, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


def tree_digests(store: Path, *folders: str, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """relative path -> digest of every published file under ``folders`` (all if none)."""
    roots = [store / f for f in folders] if folders else [store]
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(store)
            if path.is_file() and ".locks" not in rel.parts and ".tmp-" not in str(rel):
                out[str(rel)] = file_digest(path, frozenset(ignore))
    return out


def raw_digests(root: Path) -> dict[str, str]:
    """relative path -> sha256 of the exact bytes of every file (lock files excluded)."""
    out = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and ".locks" not in rel.parts:
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ----- one trial ------------------------------------------------------------------------------
@dataclass
class Outcome:
    killed: bool
    problems_after_kill: list[str]
    leftovers_after_kill: list[str]
    rerun_code: int | None
    problems_after_rerun: list[str]
    digests: dict[str, str]


def resumable(problem: str) -> bool:
    """A problem that only says an object is unfinished and how to resume it."""
    return "unfinished" in problem and "re-run" in problem


def kill_trial(
    step: Step,
    template: Path,
    work: Path,
    *,
    kill_at: int | None = None,
    kill_after: float | None = None,
    rerun: Callable[[Step, Path], int],
) -> Outcome:
    """Kill the step on a copy of ``template``, check the store, re-run it, digest the result."""
    import tdstore
    from tdstore.check import check_store, leftovers, remove_leftovers

    store = fresh_copy(template, work / f"trial-{step.name}")
    done = run_step(step, store, kill_at=kill_at, kill_after=kill_after)
    killed = done.returncode == -signal.SIGKILL
    assert killed or done.returncode == 0, done.stderr
    problems: list[str] = []
    left: list[str] = []
    if (store / "manifest.json").exists():
        handle = tdstore.open(store)
        problems = check_store(handle, deep=True)
        left = [str(p.relative_to(store)) for p in leftovers(handle)]
    elif store.exists():  # killed before the store existed: only temporaries may be there
        left = [p.name for p in store.iterdir()]
        assert all(".tmp-" in name for name in left), left
    code = None
    if not step.published(store):
        code = rerun(step, store)
    handle = tdstore.open(store)
    after = check_store(handle, deep=True)
    # Every stray file must be a known leftover (`tdstore check --clean` removes them):
    # an unknown one shows up below as a difference from the uninterrupted run.
    remove_leftovers(handle)
    return Outcome(killed, problems, left, code, after, step.compare(store))


# ----- shared fixtures' helpers ----------------------------------------------------------------
_TINY_MODEL: dict[str, Path] = {}


def tiny_model(factory: Any) -> Path:
    """One tiny random GenomeOcean-shaped model per test session (building takes seconds).

    Callers copy it before changing anything; ``factory`` is pytest's tmp_path_factory.
    """
    if "path" not in _TINY_MODEL:
        from tdstore.teacher.testing import build_tiny_model

        _TINY_MODEL["path"] = build_tiny_model(factory.mktemp("tiny-model") / "good", vocab_size=64)
    return _TINY_MODEL["path"]
