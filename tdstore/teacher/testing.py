"""Randomly initialised GenomeOcean-architecture models, for tests, CI and benchmarks.

GenomeOcean checkpoints live on a model hub this project cannot reach, so tests use a
tiny ``MistralForCausalLM`` and a BPE tokenizer trained on random DNA, saved the way a
real checkpoint is (safetensors + ``tokenizer.json`` wrapping input as ``[CLS] ... [SEP]``)::

    path = build_tiny_model(tmp_path / "tiny")           # 2 layers, hidden 32
    path = build_model_of_shape(tmp_path / "go500m", "genomeocean-500m")  # real shape
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_tokens: int
    exact: bool  # True where REFERENCE.md gives the real numbers


# GenomeOcean-500M is exact (REFERENCE.md: 541,109,760 parameters; 12 heads as in the
# genomeocean package). The others match the published hidden size and token limit;
# their depth is chosen to land near the parameter count.
SHAPES: dict[str, Shape] = {
    "genomeocean-100m": Shape(768, 10, 12, 3072, 4096, 1024, exact=False),
    "genomeocean-500m": Shape(1536, 14, 12, 6144, 4096, 1024, exact=True),
    "genomeocean-4b": Shape(3072, 26, 24, 12288, 4096, 10240, exact=False),
}


def train_dna_tokenizer(directory: Path, *, vocab_size: int, max_tokens: int, seed: int = 0):
    """A BPE tokenizer trained on random DNA, saved like GenomeOcean's; returns it loaded."""
    import numpy as np
    from tokenizers import Tokenizer, models, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(seed)
    # Enough random DNA for the merges to reach the vocabulary size.
    n_seqs = max(50, vocab_size // 4)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    corpus = [alphabet[rng.integers(0, 4, 2000)].tobytes().decode() for _ in range(n_seqs)]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list("ACGTN"),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=max_tokens,
    )
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    # GenomeOcean's checkpoints name the generic fast class.
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2))
    return fast


def _save_mistral(
    directory: Path,
    *,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_tokens: int,
    vocab_size: int,
    seed: int,
    dtype: str,
) -> Path:
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    tokenizer = train_dna_tokenizer(
        directory, vocab_size=vocab_size, max_tokens=max_tokens, seed=seed
    )
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_tokens,
        sliding_window=None,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    torch.manual_seed(seed)
    model = MistralForCausalLM(config).to(getattr(torch, dtype))
    model.save_pretrained(str(directory), safe_serialization=True)
    return directory


def build_tiny_model(
    directory: Path | str,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int | None = None,
    vocab_size: int = 64,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> Path:
    """A tiny random GenomeOcean-like checkpoint in ``directory`` (fp32 safetensors)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return _save_mistral(
        Path(directory),
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=intermediate or 2 * hidden,
        max_tokens=max_position_embeddings,
        vocab_size=vocab_size,
        seed=seed,
        dtype="float32",
    )


def build_model_of_shape(directory: Path | str, shape: str, *, seed: int = 0) -> Path:
    """A random checkpoint of a named GenomeOcean shape (bf16, like the published weights)."""
    from transformers.utils import logging as hf_logging

    if shape not in SHAPES:
        raise KeyError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    hf_logging.disable_progress_bar()
    s = SHAPES[shape]
    return _save_mistral(
        Path(directory),
        hidden=s.hidden,
        layers=s.layers,
        heads=s.heads,
        intermediate=s.intermediate,
        max_tokens=s.max_tokens,
        vocab_size=s.vocab,
        seed=seed,
        dtype="bfloat16",
    )


def random_dna(n: int, length: int | tuple[int, int], *, seed: int = 0) -> list[str]:
    """``n`` random DNA sequences of a fixed length or a length drawn from [lo, hi]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    lo, hi = (length, length) if isinstance(length, int) else length
    sizes = rng.integers(lo, hi + 1, n)
    return [alphabet[rng.integers(0, 4, int(s))].tobytes().decode() for s in sizes]
