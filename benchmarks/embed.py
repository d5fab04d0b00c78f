"""Benchmark ``tdstore embed``: tokens/s, bp/s, MFU, peak memory, against GenomeOcean's recipe.

Runs on a model directory or a named shape (random weights of the real architecture
cost the same compute), on random DNA contigs::

    python benchmarks/embed.py --shape genomeocean-500m               # on a GPU: MFU, recipe
    python benchmarks/embed.py --shape tiny --pipeline --contigs 2000 # CPU: per-contig overhead

"Recipe" is the GenomeOcean package's own embedding loop (llm_utils.LLMUtils.predict):
sort by length, batches of 25, tokenizer padding to the longest (left) with truncation at
the token limit, masked mean of the last hidden state, one device->host copy per batch.
Equal coverage: both are run on contigs that fit in one window, so both see every token;
on longer contigs the recipe drops everything past the limit and tdstore does not.

FLOPs per token = 2 x (parameters without the embedding table) + 2 x layers x hidden x
window length (causal attention scores and values). MFU = FLOPs/s over the card's dense
bf16 peak (table below; --peak-tflops overrides). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Dense bf16 peaks (TFLOP/s). H100 per REFERENCE.md; others from vendor data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100": 790.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def card(device: str) -> tuple[str, float | None]:
    if not device.startswith("cuda"):
        return f"CPU ({platform.processor() or platform.machine()})", None
    import torch

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return name, peak


def flops_per_token(model: Any, window: float) -> float:
    config = model.config
    embedding = model.get_input_embeddings().weight.numel()
    params = sum(p.numel() for p in model.parameters()) - embedding
    return 2.0 * params + 2.0 * config.num_hidden_layers * config.hidden_size * window


def ours(teacher: Any, seqs: list[str], batch_tokens: int) -> dict[str, Any]:
    """tdstore's engine: tokenise once, windows, length-sorted packing under a token budget."""
    import torch

    from tdstore.teacher.engine import Engine
    from tdstore.teacher.windows import resolve_plan

    plan = resolve_plan(
        limit=teacher.limit,
        n_special=teacher.n_special,
        window=None,
        stride=None,
        max_windows=None,
    )
    engine = Engine(teacher, plan, pooling="mean", batch_tokens=batch_tokens)
    if teacher.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(teacher.device)
    cpu = time.process_time()
    start = time.perf_counter()
    tokens = engine.tokenize(seqs)
    tokenized = time.perf_counter()
    result = engine.embed_tokens(tokens)
    _sync(teacher.device)
    end = time.perf_counter()
    stats = engine.stats
    return {
        "seconds": end - start,
        "cpu_seconds": time.process_time() - cpu,
        "tokenize_seconds": tokenized - start,
        "real_tokens": stats.real_tokens,
        "padded_tokens": stats.padded_tokens,
        "covered_tokens": int(result.covered.sum()) + teacher.n_special * len(seqs),
        "windows": stats.windows,
        "batches": stats.batches,
        "oom_retries": stats.oom_retries,
        "vectors": result.vectors,
        "peak_gib": _peak(teacher.device),
    }


def recipe(teacher: Any, seqs: list[str], batch_size: int = 25) -> dict[str, Any]:
    """GenomeOcean's own loop, re-implemented on the same loaded model."""
    import torch

    tokenizer, model, device = teacher.tokenizer, teacher.model, teacher.device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    order = np.argsort([len(s) for s in seqs], kind="stable")
    outputs: list[np.ndarray] = [None] * len(seqs)  # type: ignore[list-item]
    real = padded = 0
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    cpu = time.process_time()
    start = time.perf_counter()
    try:
        for i in range(0, len(seqs), batch_size):
            idx = order[i : i + batch_size]
            feats = tokenizer(
                [seqs[j] for j in idx],
                max_length=teacher.limit,
                return_tensors="pt",
                padding="longest",
                truncation=True,
            )
            ids = feats["input_ids"].to(device)
            mask = feats["attention_mask"].to(device)
            real += int(mask.sum())
            padded += mask.numel()
            with torch.no_grad():
                states = model(
                    input_ids=ids, attention_mask=mask, use_cache=False
                ).last_hidden_state
                states = states.detach().cpu()
                m = mask.unsqueeze(-1).cpu()
                pooled = (states * m).sum(1) / m.sum(1)
            for row, j in enumerate(idx):
                outputs[j] = pooled[row].float().numpy()
        _sync(device)
    finally:
        tokenizer.padding_side = side
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "real_tokens": real,
        "padded_tokens": padded,
        "covered_tokens": real,
        "vectors": np.stack(outputs),
        "peak_gib": _peak(device),
    }


def _peak(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**30


def pipeline(
    model_dir: Path, seqs: list[str], batch_tokens: int, device: str, n_shards: int | None
) -> dict:
    """The whole ``tdstore embed`` path (read, tokenise, forward, write, markers) in a store."""
    import tdstore
    from tdstore.ingest.core import ingest
    from tdstore.teacher.embed_run import embed

    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "c.fna"
        fasta.write_text("".join(f">c{i}\n{s}\n" for i, s in enumerate(seqs)))
        store = tdstore.init(Path(tmp) / "s")
        ingest(store, fasta, min_length=1, show_progress=False)
        store = tdstore.open(store.path)
        from tdstore.teacher.embed_store import markers, status

        started = time.perf_counter()
        summary = embed(
            store,
            str(model_dir),
            device=device,
            batch_tokens=batch_tokens,
            n_shards=n_shards,
            show_progress=False,
        )
        summary["wall_seconds"] = time.perf_counter() - started
        # Shard seconds: read, tokenise, forward, write, checksum, marker (model load excluded).
        summary["shard_seconds"] = status(store, summary["name"])["seconds"]
        done = [m for m in markers(store, summary["name"]) if m]
        summary["compute_seconds"] = sum(m["compute_seconds"] for m in done)
        summary["wait_seconds"] = sum(m["wait_seconds"] for m in done)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="local Hugging Face model directory")
    source.add_argument(
        "--shape", help="tiny, genomeocean-100m, genomeocean-500m or genomeocean-4b"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--contigs", type=int, default=None, help="contigs per measurement")
    parser.add_argument("--batch-tokens", type=int, default=None)
    parser.add_argument("--mixed", action="store_true", help="also contigs beyond the limit")
    parser.add_argument("--no-recipe", action="store_true")
    parser.add_argument("--pipeline", action="store_true", help="also time the full store path")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 on CPU: stable figures on a shared machine)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from tdstore.teacher.models import load_model, resolve_device
    from tdstore.teacher.testing import build_model_of_shape, build_tiny_model, random_dna

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    if args.threads or not cuda:
        torch.set_num_threads(args.threads or 1)
    tmp = tempfile.TemporaryDirectory()
    started = time.perf_counter()
    if args.model is not None:
        model_dir, label = args.model, args.model.name
    elif args.shape == "tiny":
        model_dir, label = (
            build_tiny_model(Path(tmp.name) / "tiny", max_position_embeddings=64),
            "tiny",
        )
    else:
        model_dir, label = build_model_of_shape(Path(tmp.name) / args.shape, args.shape), args.shape
    built = time.perf_counter() - started
    teacher = load_model(model_dir, device=device, dtype=args.dtype)
    batch_tokens = args.batch_tokens or (65536 if cuda else 8192)
    name, peak = card(device)
    peak = args.peak_tflops or peak
    n = args.contigs or (2000 if label == "tiny" else 512 if cuda else 8)
    # bp per token of this tokenizer, to draw contigs that just fit in one window.
    probe = random_dna(4, 5000, seed=args.seed + 1)
    bp_per_token = sum(map(len, probe)) / sum(
        len(teacher.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in probe
    )
    fit_bp = int((teacher.limit - teacher.n_special) * bp_per_token)
    # Equal coverage needs contigs that really fit one window: draw, tokenise, keep those.
    fitting: list[str] = []
    attempt = 0
    while len(fitting) < n:
        drawn = random_dna(2 * n, (fit_bp // 2, fit_bp), seed=args.seed + 100 * attempt)
        lengths = [len(t) for t in teacher.tokenizer(drawn, add_special_tokens=False)["input_ids"]]
        fitting += [
            s for s, k in zip(drawn, lengths, strict=True) if k + teacher.n_special <= teacher.limit
        ]
        attempt += 1
    fitting = fitting[:n]
    report: dict[str, Any] = {
        "model": label,
        "device": name,
        "dtype": teacher.dtype,
        "limit": teacher.limit,
        "hidden": teacher.hidden,
        "bp_per_token": round(bp_per_token, 2),
        "batch_tokens": batch_tokens,
        "contigs": n,
        "build_seconds": round(built, 1),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": _load(),
        "python": sys.version.split()[0],
    }
    # Warm-up at full batch size, for both methods: kernels, cuBLAS handles and the caching
    # allocator's large blocks are then set up before the timed runs, not in the first one.
    ours(teacher, fitting[: max(2, batch_tokens // teacher.limit)], batch_tokens)
    if not args.no_recipe:
        recipe(teacher, fitting[:25])
    mine = ours(teacher, fitting, batch_tokens)
    fpt = flops_per_token(teacher.model, mine["real_tokens"] / max(1, mine["windows"]))
    report["equal_coverage"] = row = _figures(mine, fitting, fpt, peak)
    if not args.no_recipe:
        theirs = recipe(teacher, fitting)
        report["recipe_equal_coverage"] = _figures(theirs, fitting, fpt, peak)
        row["speedup_vs_recipe"] = round(theirs["seconds"] / mine["seconds"], 2)
        row["cpu_time_ratio_vs_recipe"] = round(theirs["cpu_seconds"] / mine["cpu_seconds"], 2)
        diff = np.abs(mine["vectors"] - theirs["vectors"]).max()
        row["max_abs_diff_vs_recipe"] = float(diff)
    if args.mixed:
        long = random_dna(n, (fit_bp // 2, fit_bp * 6), seed=args.seed + 2)
        mine_long = ours(teacher, long, batch_tokens)
        report["mixed"] = _figures(mine_long, long, fpt, peak)
        if not args.no_recipe:
            theirs_long = recipe(teacher, long)
            report["recipe_mixed"] = _figures(theirs_long, long, fpt, peak)
            report["mixed"]["recipe_coverage"] = round(
                theirs_long["covered_tokens"] / mine_long["covered_tokens"], 3
            )
            report["mixed"]["covered_token_rate_vs_recipe"] = round(
                report["mixed"]["covered_tokens_per_s"]
                / report["recipe_mixed"]["covered_tokens_per_s"],
                2,
            )
    if args.pipeline:
        # One shard: the per-contig cost; default layout (>= 64 shards): adds per-shard costs.
        one = pipeline(Path(model_dir), fitting, batch_tokens, device, 1)
        many = pipeline(Path(model_dir), fitting, batch_tokens, device, None)

        def outside_forward(run: dict) -> float:
            return run["shard_seconds"] - run["compute_seconds"]

        report["pipeline"] = {
            "wall_seconds_with_model_load": round(one["wall_seconds"], 3),
            "contigs_per_s": round(n / one["shard_seconds"], 1),
            "forward_ms_per_contig": round(1000 * one["compute_seconds"] / n, 3),
            "tokenize_ms_per_contig": round(1000 * mine["tokenize_seconds"] / n, 3),
            # Read, tokenise (not hidden behind a previous shard here), write, fsync, marker.
            "outside_forward_ms_per_contig": round(1000 * outside_forward(one) / n, 3),
            "shards_default_layout": many["shards_done"],
            "outside_forward_ms_per_contig_default_layout": round(
                1000 * outside_forward(many) / n, 3
            ),
            "prefetch_wait_ms_per_contig_default_layout": round(1000 * many["wait_seconds"] / n, 3),
        }
    tmp.cleanup()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def _load() -> list[float] | None:
    import os

    try:
        return [round(x, 1) for x in os.getloadavg()]
    except OSError:
        return None


def _figures(run: dict[str, Any], seqs: list[str], fpt: float, peak: float | None) -> dict:
    seconds = run["seconds"]
    out = {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(run["cpu_seconds"], 3),
        "tokens_per_s": round(run["real_tokens"] / seconds, 1),
        # Tokens of the contigs the method saw (the recipe drops those past its limit).
        "covered_tokens_per_s": round(run["covered_tokens"] / seconds, 1),
        "bp_per_s": round(sum(map(len, seqs)) / seconds, 1),
        "padding": round(1 - run["real_tokens"] / max(1, run["padded_tokens"]), 3),
        "tflops": round(run["real_tokens"] * fpt / seconds / 1e12, 3),
    }
    if peak:
        out["mfu"] = round(out["tflops"] / peak, 3)
    if run.get("peak_gib") is not None:
        out["peak_gib"] = round(run["peak_gib"], 2)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
