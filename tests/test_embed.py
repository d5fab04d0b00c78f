"""The teacher's pure parts: k-mers, windows, model loading and the batched engine.

The model is a tiny random MistralForCausalLM with a BPE tokenizer trained on random
DNA, saved to disk and loaded through the same path as a real GenomeOcean checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from tdstore.errors import ModelError, UsageError
from tdstore.teacher import kmer
from tdstore.teacher.windows import WindowPlan, resolve_plan

# ----- k-mer teacher -----------------------------------------------------------------------


def _revcomp(seq: str) -> str:
    return seq.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def test_kmer_columns():
    assert [kmer.n_columns(k) for k in (4, 5, 6)] == [136, 512, 2080]
    names = kmer.canonical_kmers(4)
    assert names[:3] == ["AAAA", "AAAC", "AAAG"]
    assert all(n <= _revcomp(n) for n in names) and len(set(names)) == 136


def test_kmer_counts_by_hand():
    # ACGTTGCA: ACGT (own revcomp), CGTT -> AACG, GTTG -> CAAC, TTGC -> GCAA, TGCA (own)
    names = kmer.canonical_kmers(4)
    counts = kmer.kmer_counts("ACGTTGCA", 4)
    found = {names[i]: int(counts[i]) for i in np.nonzero(counts)[0]}
    assert found == {"ACGT": 1, "AACG": 1, "CAAC": 1, "GCAA": 1, "TGCA": 1}
    # AAAAATTTT N AAAA: AAAA AAAA AAAT AATT ATTT(=AAAT) TTTT(=AAAA); k-mers over N skipped; AAAA
    counts = kmer.kmer_counts("AAAAATTTTNAAAA", 4)
    found = {names[i]: int(counts[i]) for i in np.nonzero(counts)[0]}
    assert found == {"AAAA": 4, "AAAT": 2, "AATT": 1}


def test_kmer_matrix_strand_free_and_normalised():
    seqs = ["ACGGTCAGTTTACCGA" * 3, "NNNN", "ACG"]
    m = kmer.kmer_matrix(seqs, 5)
    assert m.shape == (3, 512) and m.dtype == np.float32
    assert m[0].sum() == pytest.approx(1.0)
    assert not m[1].any() and not m[2].any()
    np.testing.assert_array_equal(m[0], kmer.kmer_matrix([_revcomp(seqs[0])], 5)[0])


@pytest.mark.parametrize(
    "spec", ["kmer:3", "kmer:7", "kmer:x", "kmer: 4", "kmer:4 ", "kmer:+4", "kmer:"]
)
def test_kmer_bad_spec(spec):
    with pytest.raises(UsageError):
        kmer.parse_kmer_model(spec)


# ----- windows -------------------------------------------------------------------------------


def test_window_spans_cover_the_contig():
    plan = WindowPlan(content=10, stride=10)
    assert plan.spans(25) == [(0, 10), (10, 20), (20, 25)]
    assert plan.spans(10) == [(0, 10)] and plan.spans(3) == [(0, 3)]
    overlap = WindowPlan(content=10, stride=4)
    assert overlap.spans(18) == [(0, 10), (4, 14), (8, 18)]
    for n in range(1, 60):
        spans = overlap.spans(n)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(b[0] <= a[1] for a, b in zip(spans, spans[1:], strict=False))
        assert len(spans) == overlap.n_windows(n)


def test_window_cap_is_explicit():
    plan = WindowPlan(content=10, stride=10, max_windows=1)
    assert plan.spans(25) == [(0, 10)] and plan.covered(25) == 10


def test_resolve_plan_counts_special_tokens():
    plan = resolve_plan(limit=1024, n_special=2, window=None, stride=None, max_windows=None)
    assert (plan.content, plan.stride) == (1022, 1022)
    paper = resolve_plan(limit=1024, n_special=2, window=512, stride=None, max_windows=1)
    assert paper.content == 510 and paper.max_windows == 1
    with pytest.raises(UsageError, match="exceeds"):
        resolve_plan(limit=64, n_special=2, window=65, stride=None, max_windows=None)
    with pytest.raises(UsageError, match="stride"):
        resolve_plan(limit=64, n_special=2, window=None, stride=63, max_windows=None)


# ----- model loading and the engine ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tdstore.teacher.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", max_position_embeddings=32)


@pytest.fixture(scope="module")
def teacher(tiny):
    from tdstore.teacher.models import load_model

    return load_model(tiny, device="cpu", dtype="fp32")


def _direct(teacher, ids: list[int], pooling: str) -> np.ndarray:
    """One unbatched, unpadded forward pass: the reference."""
    import torch

    with torch.inference_mode():
        states = teacher.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return (states.mean(0) if pooling == "mean" else states[-1]).numpy()


def test_loaded_like_genomeocean(teacher):
    assert teacher.limit == 32 and teacher.hidden == 32
    cls_id = teacher.tokenizer.convert_tokens_to_ids("[CLS]")
    sep_id = teacher.tokenizer.convert_tokens_to_ids("[SEP]")
    assert teacher.prefix == [cls_id] and teacher.suffix == [sep_id]
    assert teacher.pad_id == teacher.tokenizer.convert_tokens_to_ids("[PAD]")
    assert type(teacher.model).__name__ == "MistralModel"  # base model, no LM head


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_pooling_equals_direct_forward(teacher, pooling):
    from tdstore.teacher.engine import Engine
    from tdstore.teacher.testing import random_dna

    plan = resolve_plan(limit=32, n_special=2, window=None, stride=None, max_windows=None)
    engine = Engine(teacher, plan, pooling=pooling, batch_tokens=96)
    seqs = random_dna(6, (10, 50), seed=1)
    result = engine.embed(seqs)
    assert engine.stats.batches > 1 and engine.stats.padded_tokens > engine.stats.real_tokens
    for i, seq in enumerate(seqs):
        ids = teacher.tokenizer(seq)["input_ids"]
        assert len(ids) <= 32 and result.n_windows[i] == 1
        np.testing.assert_allclose(result.vectors[i], _direct(teacher, ids, pooling), atol=2e-6)


def test_padding_mask_dropped_only_for_causal_attention(teacher):
    """Right padding cannot reach a causal model's real tokens; a bidirectional one keeps it."""
    import torch
    from transformers import BertConfig, BertModel

    from tdstore.teacher.engine import Engine, causal_attention
    from tdstore.teacher.testing import random_dna

    plan = resolve_plan(limit=32, n_special=2, window=None, stride=None, max_windows=None)
    assert causal_attention(teacher.model)
    masks: list[bool] = []

    def record(_module, _args, kwargs):
        masks.append(kwargs.get("attention_mask") is not None)

    seqs = random_dna(6, (10, 50), seed=1)  # several lengths: padded batches
    hook = teacher.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        unmasked = Engine(teacher, plan, batch_tokens=96)
        fast = unmasked.embed(seqs)
        assert unmasked.causal and masks and not any(masks)
        masks.clear()
        masked = Engine(teacher, plan, batch_tokens=96)
        masked.causal = False  # as for a bidirectional model
        reference = masked.embed(seqs)
        assert any(masks)
    finally:
        hook.remove()
    np.testing.assert_allclose(fast.vectors, reference.vectors, atol=2e-6)
    tiny_bert = BertConfig(
        vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16,
    )  # fmt: skip
    assert not causal_attention(BertModel(tiny_bert))
    assert not causal_attention(torch.nn.Linear(2, 2))  # no attention at all


def test_long_contigs_windowed_and_weighted(teacher):
    from tdstore.teacher.engine import Engine
    from tdstore.teacher.testing import random_dna

    plan = resolve_plan(limit=32, n_special=2, window=None, stride=20, max_windows=None)
    engine = Engine(teacher, plan, pooling="mean", batch_tokens=64)
    seqs = random_dna(3, (150, 300), seed=2)
    result = engine.embed(seqs)
    prefix, suffix = teacher.prefix, teacher.suffix
    for i, seq in enumerate(seqs):
        ids = teacher.tokenizer(seq, add_special_tokens=False)["input_ids"]
        spans = plan.spans(len(ids))
        assert result.n_windows[i] == len(spans) > 1
        assert result.n_tokens[i] == len(ids) == result.covered[i]
        assert spans[-1][1] == len(ids)  # the whole contig, no truncation
        vectors = [_direct(teacher, prefix + ids[a:b] + suffix, "mean") for a, b in spans]
        weights = np.array([b - a + 2 for a, b in spans], dtype=np.float64)
        expected = (np.array(vectors, dtype=np.float64) * weights[:, None]).sum(0) / weights.sum()
        np.testing.assert_allclose(result.vectors[i], expected, atol=2e-6)


def test_paper_mode_first_window_last_token(teacher):
    from tdstore.teacher.engine import Engine
    from tdstore.teacher.testing import random_dna

    plan = resolve_plan(limit=32, n_special=2, window=16, stride=None, max_windows=1)
    engine = Engine(teacher, plan, pooling="last")
    (seq,) = random_dna(1, 200, seed=3)
    result = engine.embed([seq])
    # The paper's truncation: tokenizer(max_length=16, truncation=True), last token's state.
    ids = teacher.tokenizer(seq, max_length=16, truncation=True)["input_ids"]
    assert result.n_windows[0] == 1 and result.covered[0] == 14 < result.n_tokens[0]
    np.testing.assert_allclose(result.vectors[0], _direct(teacher, ids, "last"), atol=2e-6)


def test_batch_budget_changes_only_rounding(teacher):
    from tdstore.teacher.engine import Engine
    from tdstore.teacher.testing import random_dna

    plan = resolve_plan(limit=32, n_special=2, window=None, stride=None, max_windows=None)
    seqs = random_dna(8, (20, 120), seed=4)
    small = Engine(teacher, plan, batch_tokens=32).embed(seqs)
    large = Engine(teacher, plan, batch_tokens=100_000).embed(seqs)
    np.testing.assert_allclose(small.vectors, large.vectors, atol=2e-6)
    np.testing.assert_array_equal(small.n_windows, large.n_windows)


def test_bad_layer_refused(teacher):
    from tdstore.teacher.engine import Engine

    plan = WindowPlan(content=30, stride=30)
    with pytest.raises(UsageError, match="layers"):
        Engine(teacher, plan, layer=5)
    hidden_layer = Engine(teacher, plan, layer=1).embed(["ACGTACGTTTGACCA"])
    last = Engine(teacher, plan, layer=-1).embed(["ACGTACGTTTGACCA"])
    assert not np.allclose(hidden_layer.vectors, last.vectors)


def test_identity_hashes_content(tiny, tmp_path):
    from tdstore.teacher.models import model_identity

    copy = shutil.copytree(tiny, tmp_path / "elsewhere")
    assert model_identity(copy) == model_identity(tiny)  # paths do not matter
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = model_identity(copy)
    assert changed["weights"] != model_identity(tiny)["weights"]
    assert changed["tokenizer"] == model_identity(tiny)["tokenizer"]


def test_missing_tokenizer_is_a_model_error(tiny, tmp_path):
    from tdstore.teacher.models import inspect_model

    broken = shutil.copytree(tiny, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (broken / name).unlink()
    with pytest.raises(ModelError, match="no-tokenizer.*tokenizer"):
        inspect_model(broken)
    with pytest.raises(ModelError, match="not a model directory"):
        inspect_model(tmp_path / "absent")


def test_tokenizer_bigger_than_embeddings(tiny, tmp_path):
    from tdstore.teacher.models import inspect_model

    broken = shutil.copytree(tiny, tmp_path / "small-vocab")
    config = json.loads((broken / "config.json").read_text())
    config["vocab_size"] = 8
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="small-vocab.*different checkpoints"):
        inspect_model(broken)


def test_remote_code_needs_the_flag(tiny, tmp_path):
    from tdstore.teacher.models import inspect_model

    custom = shutil.copytree(tiny, tmp_path / "custom")
    config = json.loads((custom / "config.json").read_text())
    config["model_type"] = "dna_custom_arch"
    config["auto_map"] = {"AutoConfig": "configuration_dna.DnaConfig"}
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="trust-remote-code"):
        inspect_model(custom)


def _edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def _edit_weights(directory, edit):
    """Rewrite model.safetensors through ``edit(tensors) -> tensors`` (real safetensors)."""
    from safetensors.torch import load_file, save_file

    weights = directory / "model.safetensors"
    save_file(edit(load_file(weights)), weights, metadata={"format": "pt"})


def _drop_tensor(tensors):
    del tensors["model.layers.1.mlp.up_proj.weight"]
    return tensors


def _store_a_buffer(tensors):
    import torch

    # Older checkpoints stored the rotary frequencies; the model computes them itself.
    tensors["model.rotary_emb.inv_freq"] = torch.ones(4)
    return tensors


WEIGHT_MISMATCHES = {
    # config.json asks for one more layer than the weights hold
    "more-layers": (
        lambda d: _edit_config(d, num_hidden_layers=3),
        r"9 weights missing from the files \(layers\.2\.",
    ),
    "fewer-layers": (
        lambda d: _edit_config(d, num_hidden_layers=1),
        r"9 stored weights unused \(model\.layers\.1\.",
    ),
    "dropped-tensor": (
        lambda d: _edit_weights(d, _drop_tensor),
        r"1 weights missing from the files \(layers\.1\.mlp\.up_proj\.weight\)",
    ),
    "wider": (
        lambda d: _edit_config(d, hidden_size=48, head_dim=12),
        r"weights of the wrong shape \(embed_tokens\.weight stored 64x32 vs config 64x48",
    ),
    # a BERT config of the Mistral checkpoint's size: nothing of BertModel is stored
    "bert": (
        lambda d: (d / "config.json").write_text(
            json.dumps(
                {
                    "model_type": "bert",
                    "architectures": ["BertModel"],
                    "hidden_size": 32,
                    "num_hidden_layers": 2,
                    "num_attention_heads": 4,
                    "intermediate_size": 64,
                    "vocab_size": 64,
                    "max_position_embeddings": 32,
                }
            )
        ),
        r"weights missing from the files \(embeddings\.",
    ),
}


@pytest.mark.parametrize("variant", sorted(WEIGHT_MISMATCHES))
def test_weights_not_matching_the_config_are_refused(variant, tiny, tmp_path):
    """transformers would fill the gaps with random numbers and embed noise (exit 0)."""
    from tdstore.teacher.models import load_model

    edit, names = WEIGHT_MISMATCHES[variant]
    broken = shutil.copytree(tiny, tmp_path / variant)
    edit(broken)
    with pytest.raises(ModelError, match=f"^{broken}: the weights do not match config.json: ") as e:
        load_model(broken, device="cpu", dtype="fp32")
    assert e.value.exit_code == 7
    assert len(str(e.value).splitlines()) == 1
    assert re.search(names, str(e.value)), str(e.value)


def test_unsaved_buffers_and_the_lm_head_are_not_mismatches(tiny, tmp_path, teacher):
    """inv_freq is computed, not loaded (absent or stored); lm_head is a head embed never uses."""
    import torch

    from tdstore.teacher.models import load_model

    names = {name for name, _ in teacher.model.named_buffers()}
    assert "rotary_emb.inv_freq" in names  # absent from the files, yet loaded fine
    stored = shutil.copytree(tiny, tmp_path / "stored-buffer")
    _edit_weights(stored, _store_a_buffer)
    loaded = load_model(stored, device="cpu", dtype="fp32")
    for (name, a), (_, b) in zip(
        loaded.model.named_parameters(), teacher.model.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("damage", ["truncated", "random-bytes"])
def test_damaged_weight_files_are_a_model_error(damage, tiny, tmp_path):
    from tdstore.teacher.models import inspect_model, load_model

    broken = shutil.copytree(tiny, tmp_path / damage)
    info = inspect_model(broken)  # before the damage: load_model's own check is tested too
    weights = broken / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(data[: len(data) // 2])
    else:
        weights.write_bytes(np.random.default_rng(0).bytes(len(data)))
    message = f"^{broken}: cannot load the weights \\("
    with pytest.raises(ModelError, match=message + "model.safetensors: "):
        inspect_model(broken)  # early: before embed creates anything
    with pytest.raises(ModelError, match=message) as e:
        load_model(info, device="cpu", dtype="fp32")
    assert e.value.exit_code == 7 and len(str(e.value).splitlines()) == 1


def test_out_of_memory_halves_the_budget(teacher, monkeypatch):
    import torch

    from tdstore.teacher.engine import Engine
    from tdstore.teacher.testing import random_dna

    plan = resolve_plan(limit=32, n_special=2, window=None, stride=None, max_windows=None)
    seqs = random_dna(6, (20, 70), seed=5)
    expected = Engine(teacher, plan, batch_tokens=64).embed(seqs)
    real = Engine._forward_batch

    def small_memory(self, token_ids, windows, lengths, batch):
        if len(batch) * int(lengths[batch].max()) > 64:  # "GPU" holds 64 padded tokens
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, token_ids, windows, lengths, batch)

    monkeypatch.setattr(Engine, "_forward_batch", small_memory)
    engine = Engine(teacher, plan, batch_tokens=1024)
    result = engine.embed(seqs)
    assert engine.stats.oom_retries >= 2 and engine.stats.budgets[-1] <= 256
    np.testing.assert_allclose(result.vectors, expected.vectors, atol=2e-6)
    tiny_gpu = Engine(teacher, WindowPlan(content=30, stride=30), batch_tokens=1024)
    monkeypatch.setattr(
        Engine, "_forward_batch", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError())
    )
    with pytest.raises(ModelError, match="does not fit"):
        tiny_gpu.embed(seqs[:1])
