"""Loading a teacher model from a local Hugging Face directory, safely and offline.

No network, no remote code unless asked; the tokenizer must fit the model::

    teacher = load_model("GenomeOcean-500M", device="auto", dtype="auto")
    teacher.hidden, teacher.limit, teacher.prefix, teacher.suffix   # 1536, 1024, [1], [2]

:func:`model_identity` hashes the files that change the numbers (weights, tokenizer,
config) by content; it is part of an embedding set's fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tdstore.errors import ModelError, UsageError

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "tokenizer.model",
)
# Config keys that never change a forward pass's numbers.
_CONFIG_NOISE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache"}
# Content hashes of large files are remembered by (size, mtime) to avoid re-reading
# gigabytes on every run; the identity is still the content hash.
_HASH_CACHE_MIN = 64 << 20


@dataclass
class Teacher:
    """A loaded model, its tokenizer and what windowing needs to know."""

    model: Any
    tokenizer: Any
    path: Path
    hidden: int
    limit: int  # tokens per forward pass, special tokens included
    prefix: list[int]  # special tokens before the sequence ([CLS])
    suffix: list[int]  # after it ([SEP])
    pad_id: int
    device: str
    dtype: str
    identity: dict[str, str] = field(default_factory=dict)

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.suffix)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible (``cuda:LOCAL_RANK`` under torchrun), else cpu."""
    import torch

    from tdstore.devices import check_device

    device = check_device(device, allow_auto=True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> bf16 on a GPU, fp32 on a CPU (the resolved value is fingerprinted)."""
    if dtype == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: expected bf16, fp16, fp32 or auto")
    return dtype


def _check_directory(path: Path) -> None:
    if not path.is_dir():
        raise ModelError(
            f"{path}: not a model directory (expected a local Hugging Face checkpoint or kmer:K)"
        )
    if not (path / "config.json").exists():
        raise ModelError(f"{path}: no config.json; not a Hugging Face model directory")


def load_tokenizer(path: Path, *, trust_remote_code: bool = False) -> Any:
    """GenomeOcean's way (``tokenizer.json`` as a fast tokenizer), else AutoTokenizer offline."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if (path / "tokenizer.json").exists():
            return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
        if (path / "tokenizer_config.json").exists():
            return AutoTokenizer.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=trust_remote_code
            )
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot load the tokenizer ({_first_line(exc)})") from None
    raise ModelError(
        f"{path}: no tokenizer files (tokenizer.json or tokenizer_config.json); "
        "copy the checkpoint's tokenizer into the model directory"
    )


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a sequence (found by probing it)."""
    probe = "ACGTACGTAC"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    raise ModelError("the tokenizer changes the sequence when adding special tokens")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def token_limit(config: Any, tokenizer: Any) -> int:
    """Tokens per forward pass: the config's position limit, the tokenizer's if smaller."""
    limits = []
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 10**7:
        limits.append(model_max)
    if not limits:
        raise ModelError(
            "the model config states no token limit (max_position_embeddings); pass --window"
        )
    return min(limits)


@dataclass
class ModelInfo:
    """What a model directory says without loading its weights (cheap: config + tokenizer)."""

    path: Path
    config: Any
    tokenizer: Any
    hidden: int
    limit: int
    prefix: list[int]
    suffix: list[int]
    pad_id: int
    identity: dict[str, str]


def inspect_model(path: Path | str, *, trust_remote_code: bool = False) -> ModelInfo:
    """Read config and tokenizer and hash the files; raises ModelError with the reason."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    path = Path(path)
    _check_directory(path)
    # load_model checks the load report itself (check_loading_info) and refuses a
    # mismatch; transformers' multi-line version of it would only be noise.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise ModelError(
                f"{path}: the model needs its own Python code (auto_map in config.json); "
                "read that code, then pass --trust-remote-code if you trust it"
            ) from None
        raise ModelError(f"{path}: unreadable config.json ({_first_line(exc)})") from None
    except OSError as exc:
        raise ModelError(f"{path}: unreadable config.json ({_first_line(exc)})") from None
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise ModelError(_vocab_message(path, len(tokenizer), vocab))
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise ModelError(f"{path}: no weight files (*.safetensors or *.bin)")
    _check_safetensors_headers(path)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(hidden, int):
        raise ModelError(f"{path}: config.json states no hidden_size")
    prefix, suffix = special_tokens(tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    return ModelInfo(
        path=path,
        config=config,
        tokenizer=tokenizer,
        hidden=hidden,
        limit=token_limit(config, tokenizer),
        prefix=prefix,
        suffix=suffix,
        pad_id=int(pad_id),
        identity=model_identity(path),
    )


def _check_safetensors_headers(path: Path) -> None:
    """Refuse truncated or overwritten safetensors files before anything is written.

    Opening reads only the header, and safetensors checks there that the header's
    tensors cover the file exactly, so a cut-off copy fails here, cheaply, instead of
    in load_model after the embedding set exists.
    """
    from safetensors import SafetensorError, safe_open

    for file in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise ModelError(
                f"{path}: cannot load the weights ({file.name}: {_first_line(exc)})"
            ) from None


def _vocab_message(path: Path, n_tokens: int, n_embed: int) -> str:
    return (
        f"{path}: the tokenizer has {n_tokens} tokens but the model only {n_embed} "
        "embeddings; tokenizer and weights are from different checkpoints"
    )


def load_model(
    path: Path | str | ModelInfo,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> Teacher:
    """Load the base model (no LM head) for inference; raises ModelError with the reason."""
    import torch
    from safetensors import SafetensorError
    from transformers import AutoModel

    info = (
        path
        if isinstance(path, ModelInfo)
        else inspect_model(path, trust_remote_code=trust_remote_code)
    )
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = dict(
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        dtype=getattr(torch, DTYPES[dtype]),
        # Report wrong-shaped weights in the loading info (checked below, with their
        # names) instead of transformers' multi-line "see the report above" error.
        ignore_mismatched_sizes=True,
        output_loading_info=True,
    )
    where = str(info.path)
    try:
        try:
            model, loading = AutoModel.from_pretrained(where, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):
            # Architectures without an sdpa kernel fall back to their default attention.
            model, loading = AutoModel.from_pretrained(where, **kwargs)
    except (
        OSError,
        ValueError,
        RuntimeError,
        EOFError,
        SafetensorError,  # a truncated or overwritten model.safetensors
        pickle.UnpicklingError,  # torch.load(weights_only=True) refused code in pickled weights
    ) as exc:
        raise ModelError(f"{where}: cannot load the weights ({_first_line(exc)})") from None
    check_loading_info(model, loading, info.path)
    n_embed = getattr(model.get_input_embeddings(), "num_embeddings", None)
    if n_embed is not None and len(info.tokenizer) > n_embed:
        raise ModelError(_vocab_message(info.path, len(info.tokenizer), n_embed))
    model.eval().to(device)
    return Teacher(
        model=model,
        tokenizer=info.tokenizer,
        path=info.path,
        hidden=info.hidden,
        limit=info.limit,
        prefix=info.prefix,
        suffix=info.suffix,
        pad_id=info.pad_id,
        device=device,
        dtype=dtype,
        identity=info.identity,
    )


_NAMES_SHOWN = 3


def _shape(shape: Any) -> str:
    return "x".join(str(int(n)) for n in shape)


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (", ..." if len(names) > _NAMES_SHOWN else "")


def weight_problems(model: Any, loading: dict[str, Any]) -> list[str]:
    """What in a load report means the model is not the checkpoint's (empty when it is).

    transformers fills weights the checkpoint lacks with random numbers and only logs
    it; embeddings from such a model look fine and are noise. Tolerated, because they
    do not change a single number: buffers the model computes from its config
    (rotary ``inv_freq``, ``position_ids``), missing or stored, and a task head outside
    the base model (``lm_head`` of a ``*ForCausalLM`` checkpoint), which embedding
    never uses. Every other stored weight must be used: an unused layer means the
    config describes a different (smaller) model than the weights.
    """
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {name for name, _ in model.named_buffers()}
    prefix = f"{getattr(model, 'base_model_prefix', '') or ''}."
    own = {name.split(".", 1)[0] for name in parameters | buffers}

    def unused(key: str) -> bool:
        bare = key[len(prefix) :] if prefix != "." and key.startswith(prefix) else key
        if bare in buffers:
            return False
        return bare != key or bare.split(".", 1)[0] in own

    missing = sorted(k for k in loading.get("missing_keys", ()) if k not in buffers)
    mismatched = sorted(
        f"{k[0]} stored {_shape(k[1])} vs config {_shape(k[2])}"
        for k in loading.get("mismatched_keys", ())
    )
    unexpected = sorted(k for k in loading.get("unexpected_keys", ()) if unused(k))
    errors = [str(e).strip().splitlines()[0] for e in loading.get("error_msgs", ()) if str(e)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} weights missing from the files ({_some(missing)})")
    if mismatched:
        problems.append(f"{len(mismatched)} weights of the wrong shape ({_some(mismatched)})")
    if unexpected:
        problems.append(f"{len(unexpected)} stored weights unused ({_some(unexpected)})")
    if errors:
        problems.append(f"{len(errors)} load errors ({_some(errors)})")
    return problems


def check_loading_info(model: Any, loading: dict[str, Any], path: Path) -> None:
    """Refuse a model whose weights do not match its config (see :func:`weight_problems`)."""
    problems = weight_problems(model, loading)
    if problems:
        raise ModelError(
            f"{path}: the weights do not match config.json: {'; '.join(problems)}; "
            "the config and the weight files are from different checkpoints"
        )


def model_identity(path: Path | str) -> dict[str, str]:
    """Content hashes of the weights, the tokenizer files and the (numerical) config."""
    path = Path(path)
    weights = hashlib.sha256()
    tokenizer = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.suffix in WEIGHT_SUFFIXES and file.is_file():
            weights.update(file.name.encode() + b"\0" + file_sha256(file).encode())
        elif file.name in TOKENIZER_FILES:
            tokenizer.update(file.name.encode() + b"\0" + file_sha256(file).encode())
    config = json.loads((path / "config.json").read_text())
    config = {k: v for k, v in config.items() if k not in _CONFIG_NOISE}
    return {
        "weights": weights.hexdigest(),
        "tokenizer": tokenizer.hexdigest(),
        "config": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
    }


def _hash_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tdstore" / "file-sha256.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file's content; large files' hashes are remembered by (path, size, mtime)."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache: dict[str, str] = {}
    cache_file = _hash_cache_file()
    if stat.st_size >= _HASH_CACHE_MIN:
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            return cache[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    value = digest.hexdigest()
    if stat.st_size >= _HASH_CACHE_MIN:
        cache[key] = value
        try:
            from tdstore.atomic import write_json_atomic

            write_json_atomic(cache_file, cache)
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    return value
