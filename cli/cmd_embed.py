"""``tdstore embed STORE --model PATH`` and ``tdstore embed status STORE [NAME]``.

``embed`` is a group whose default command is ``run``: a first argument that is not a
subcommand name is taken as the store, so both forms above work (``embed run STORE``
too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

StorePath = Annotated[Path, typer.Argument(help="Store directory, e.g. gut.tdstore")]


class _DefaultRun(TyperGroup):
    """Routes ``embed STORE ...`` to ``embed run STORE ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in {"--help", "-h"}:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    embed_app = typer.Typer(
        cls=_DefaultRun,
        no_args_is_help=True,
        help=(
            "Embed contigs with a teacher model, resumable and sharded.\n\n"
            "tdstore embed STORE --model PATH [options]   (the same as `embed run`)\n\n"
            "tdstore embed status STORE [NAME]"
        ),
    )
    embed_app.command("run")(run)
    embed_app.command("status")(status)
    app.add_typer(embed_app, name="embed")


def run(
    store: StorePath,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Local Hugging Face model directory (e.g. GenomeOcean-500M), or kmer:K (K=4..6).",
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Embedding set name (default: <model dir>-<pooling>, or kmerK)."
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="Worker i of N, e.g. 0/4 (default: SLURM_ARRAY_TASK_ID or RANK, else 0/1).",
        ),
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (mps on an Apple GPU).")
    ] = "auto",
    batch_tokens: Annotated[
        int | None,
        typer.Option(
            "--batch-tokens",
            help="Padded tokens per batch (default 65536 on GPU, 8192 on CPU); halved on OOM.",
        ),
    ] = None,
    # Model options default to None so that one given with kmer:K can be refused.
    pooling: Annotated[
        str | None,
        typer.Option(
            "--pooling", help="mean (masked mean, the default) or last (last non-pad token)."
        ),
    ] = None,
    window: Annotated[
        int | None,
        typer.Option(
            "--window",
            help="Tokens per forward pass, special tokens included (default: the model's limit).",
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride", help="Sequence tokens between window starts (default: no overlap)."
        ),
    ] = None,
    max_windows: Annotated[
        int | None,
        typer.Option(
            "--max-windows",
            help="Use at most N windows per contig (1 with --window 512 --pooling last = paper).",
        ),
    ] = None,
    layer: Annotated[
        int | None,
        typer.Option(
            "--layer", help="Hidden layer to pool; -1 = last (after the norm), the default."
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype", help="bf16, fp16, fp32 or auto (the default: bf16 on GPU, fp32 on CPU)."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", help="Directory of vectors by sequence md5, shared between stores."
        ),
    ] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code", help="Allow the model directory's own Python code to run."
        ),
    ] = False,
    n_shards: Annotated[
        int | None,
        typer.Option(
            "--n-shards",
            help=(
                "Shards of a new set (default 64; fewer for small sets; <= 16384 rows each); "
                "an existing set keeps its own count, another is refused."
            ),
        ),
    ] = None,
    max_shards: Annotated[
        int | None,
        typer.Option("--max-shards", help="Stop after N shards (for time-limited jobs)."),
    ] = None,
    require_complete: Annotated[
        bool,
        typer.Option(
            "--require-complete",
            help="Exit 4 unless all of this worker's shards are done at the end (workflows).",
        ),
    ] = False,
) -> None:
    """Embed every contig of STORE (whole contigs, in windows); re-run to resume.

    Options for a model directory only (--pooling, --window, --stride, --max-windows,
    --layer, --dtype, --batch-tokens, --trust-remote-code) are refused with kmer:K.
    """
    import tdstore
    from tdstore.errors import IncompleteError
    from tdstore.teacher.embed_run import embed

    summary = embed(
        tdstore.open(store),
        model,
        name=name,
        shard=shard,
        device=device,
        batch_tokens=batch_tokens,
        pooling=pooling,
        window=window,
        stride=stride,
        max_windows=max_windows,
        layer=layer,
        dtype=dtype,
        cache=cache,
        trust_remote_code=trust_remote_code,
        n_shards=n_shards,
        max_shards=max_shards,
    )
    if summary["status"] == "up to date":
        typer.echo(
            f"embeddings/{summary['name']}: up to date for worker {summary['worker']} "
            f"(fingerprint {summary['fingerprint'][:12]})"
        )
        return
    busy = summary["shard_seconds"]
    rate = f", {summary['tokens'] / busy:,.0f} tokens/s" if busy and summary["tokens"] else ""
    typer.echo(
        f"embeddings/{summary['name']}: {summary['status']}, worker {summary['worker']} "
        f"finished {summary['shards_done']} shard(s), {summary['shards_left']} left; "
        f"{summary['computed']} contigs computed, {summary['copied']} copied; "
        f"{summary['tokens']:,} tokens in {busy:.1f} s of shards{rate} "
        f"({summary['seconds']:.1f} s in all, start-up included)"
    )
    if require_complete and summary["shards_left"]:
        # A workflow must not mark this worker done when a shard was skipped (locked by
        # another process) or --max-shards stopped early.
        left = summary["pending"]
        raise IncompleteError(
            f"embeddings/{summary['name']}: worker {summary['worker']} has "
            f"{len(left)} shard(s) unfinished ({_shown(left)}); another process holds "
            "them or --max-shards stopped early; re-run the same command to finish"
        )


def _shown(shards: list[int], limit: int = 12) -> str:
    return ", ".join(map(str, shards[:limit])) + (" ..." if len(shards) > limit else "")


def status(
    store: StorePath,
    name: Annotated[str | None, typer.Argument(help="Embedding set (default: all).")] = None,
    require_complete: Annotated[
        bool,
        typer.Option(
            "--require-complete",
            help="Exit 4 if a set (or the store: no sets) is incomplete, e.g. before teach.",
        ),
    ] = False,
) -> None:
    """Done and pending shards, tokens and throughput of the embedding sets."""
    import tdstore
    from tdstore.errors import IncompleteError
    from tdstore.teacher import embed_store

    handle = tdstore.open(store)
    names = [name] if name else embed_store.list_names(handle)
    if not names:
        typer.echo(f"{store}: no embedding sets")
        if require_complete:
            raise IncompleteError(f"{store}: no embedding sets; run tdstore embed first")
        return
    incomplete = []
    for set_name in names:
        state = embed_store.status(handle, set_name)
        rate = state["tokens_per_s"]
        pending = state["pending"]
        shown = _shown(pending)
        typer.echo(
            f"{set_name}: {state['done']}/{state['n_shards']} shards done, "
            f"{state['rows_done']:,}/{state['n_rows']:,} contigs "
            f"({state['computed']:,} computed, {state['copied']:,} copied), "
            f"{state['tokens']:,} tokens" + (f", {rate:,.0f} tokens/s per worker" if rate else "")
        )
        typer.echo(f"  model {state['model']}, fingerprint {str(state['fingerprint'])[:12]}")
        if pending:
            typer.echo(f"  pending shards: {shown}")
            incomplete.append(f"{set_name} ({len(pending)} of {state['n_shards']} shards pending)")
    if require_complete and incomplete:
        raise IncompleteError(
            f"{store}: embedding set(s) incomplete: {'; '.join(incomplete)}; "
            "re-run tdstore embed to finish"
        )
