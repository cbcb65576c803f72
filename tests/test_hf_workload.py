"""The hf_causal_lm workload: a tiny random GPT-2 and a BPE tokenizer built locally in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

pytest.importorskip("transformers")

from grasp_pipeline.config import RetrainParams, load_params
from grasp_pipeline.infra.storage import DeltaStore  # noqa: E402
from grasp_pipeline.sketching import GradientSketcher  # noqa: E402
from grasp_pipeline.training.retrain import Recipe, StackedTrainer, unstack  # noqa: E402
from grasp_pipeline.workloads import make_workload  # noqa: E402
from grasp_pipeline.workloads.hf_causal_lm import PADDING, HFCausalLMParams, HFCausalLMWorkload, make_tiny  # noqa: E402

from .conftest import TINY  # noqa: E402

ATOL = 1e-5
TEXTS = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b",
         "Der schnelle braune Fuchs springt.", "Le renard brun saute.", "x", "import os\nprint(os.getcwd())",
         "It was the best of times, it was the worst of times.", "for i in range(10): pass"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("tiny_gpt2"), vocab_size=300, n_layer=2, n_embd=32, n_head=2,
                     n_positions=32, training_texts=TEXTS * 20)


@pytest.fixture(scope="module")
def workload(tiny_dir):
    return make_workload("hf_causal_lm", hf_model_path=str(tiny_dir), max_tokens=16)


@pytest.fixture(scope="module")
def pool(workload):
    return workload.encode(TEXTS)


def test_make_tiny_writes_a_gpt2_a_tokenizer_and_run_settings(tiny_dir, workload):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_dir, local_files_only=True)
    assert (config.model_type, config.n_layer, config.n_embd) == ("gpt2", 2, 32)
    assert (tiny_dir / "tokenizer.json").is_file() and (tiny_dir / "grasp.toml").is_file()

    params = load_params("smoke", tiny_dir / "grasp.toml").workload
    assert params.name == "hf_causal_lm" and params.hf_model_path == str(tiny_dir.resolve())
    model = workload.build_model(0)
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training


def test_encode_tokenizes_truncates_and_pads_with_a_marker(workload):
    encoded = workload.encode(["hello " * 40, "x", ""])
    assert encoded.shape == (3, 16) and encoded.dtype == torch.long
    assert (encoded[0] >= 0).all()  # truncated to max_tokens
    assert encoded[1, 0] >= 0 and (encoded[1, 1:] == PADDING).all()
    assert (encoded[2] == PADDING).all()


def test_loss_is_the_mean_next_token_cross_entropy_over_real_tokens(workload, pool):
    model = workload.build_model(0)
    losses = workload.example_losses(model, pool)
    with torch.no_grad():
        for i in range(pool.shape[0]):
            ids = pool[i][pool[i] >= 0]
            if len(ids) < 2:  # nothing to predict
                assert losses[i] == 0.0
                continue
            logits = model(ids[None]).logits[0, :-1]  # unpadded: padding must not change the result
            expected = torch.nn.functional.cross_entropy(logits, ids[1:])
            torch.testing.assert_close(losses[i], expected, atol=1e-5, rtol=0)


def test_vmapped_sketches_equal_projected_loop_gradients(workload, pool):
    model = workload.build_model(0)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    sketcher = GradientSketcher(workload, params, "gaussian", k=32, seed=1, chunk_size=3)  # 8 = 3 + 3 + 2
    out = sketcher.sketch_examples(pool)
    flats = []
    for i in range(pool.shape[0]):
        loss = workload.example_losses(model, pool[i:i + 1])[0]
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        flats.append(torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
                                for g, p in zip(grads, model.parameters())]))
    flat = torch.stack(flats)
    real = (pool >= 0).sum(1) >= 2
    assert (flat[real].norm(dim=1) > 1e-2).all()  # non-trivial gradients, so the tolerance is a real check
    np.testing.assert_allclose(out.sketch, sketcher.projector.project(flat).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.grad_norm, flat.norm(dim=1).numpy(), rtol=1e-4, atol=1e-6)


def test_training_models_together_equals_training_each_alone(workload, pool):
    trainer = StackedTrainer(workload, Recipe.from_params(RetrainParams(), steps=3, batch_size=2, lr=1e-2))
    members = [np.array([0, 1, 2]), np.array([3, 5, 6, 7])]
    together = trainer.train(pool, members, [(0, 0), (0, 1)])
    name = "transformer.wte.weight"  # tied to the output head: functional_call keeps them tied
    assert not torch.equal(together[name][0], together[name][1])
    for j, rows in enumerate(members):
        alone = unstack(trainer.train(pool, [rows], [(0, j)]), 0)
        for key, value in unstack(together, j).items():
            torch.testing.assert_close(value, alone[key], atol=ATOL, rtol=0, msg=key)
    before = trainer.example_losses(trainer.stack(1), pool)[0]
    after = trainer.example_losses(together, pool)[0]
    assert after[members[0]].mean() < before[members[0]].mean()  # it trains


def test_a_model_built_from_a_config_is_random_per_seed(tiny_dir):
    config = json.dumps({"model_type": "gpt2", "vocab_size": 300, "n_positions": 16, "n_embd": 16,
                         "n_layer": 1, "n_head": 2})
    workload = HFCausalLMWorkload(HFCausalLMParams(hf_model_config=config,
                                                   hf_tokenizer_path=str(tiny_dir / "tokenizer.json"), max_tokens=16))
    a, b, c = (workload.build_model(s).state_dict()["transformer.wte.weight"] for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert workload.transformers_config.attn_pdrop == 0.0


@pytest.mark.parametrize("params, message", [
    (dict(), "exactly one of"),
    (dict(hf_model_path="/no/such/dir"), "not a directory"),
    (dict(hf_model_config='{"n_layer": 1}', hf_tokenizer_path="x"), "model_type|does not exist"),
])
def test_bad_settings_are_refused_naming_the_field(params, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        make_workload("hf_causal_lm", **params)


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(tiny_dir):
    config = json.dumps({"model_type": "gpt2", "vocab_size": 100, "n_positions": 16, "n_embd": 16,
                         "n_layer": 1, "n_head": 2})
    with pytest.raises(ValueError, match="300 tokens but the model only 100"):
        make_workload("hf_causal_lm", hf_model_config=config, hf_tokenizer_path=str(tiny_dir / "tokenizer.json"),
                      max_tokens=16)


def test_grasp_run_smoke_on_a_local_gpt2(tiny_dir, tmp_path):
    """What a user runs after --make-tiny: grasp run --config <dir>/grasp.toml --profile smoke (bounded by TINY)."""

    settings = load_params("smoke", tiny_dir / "grasp.toml").workload
    config = tmp_path / "tiny_gpt2.json"
    config.write_text(json.dumps({**TINY, "workload": {"name": settings.name, "hf_model_path": settings.hf_model_path,
                                                       "hf_tokenizer_path": settings.hf_tokenizer_path,
                                                       "max_tokens": 16}}))
    root = tmp_path / "storage"
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("grasp")), "run", "--profile", "smoke", "--config", str(config),
         "--root", str(root)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "workload=hf_causal_lm" in completed.stdout and "Holdout fidelity" in completed.stdout
    store = DeltaStore(str(root))
    workload_config = json.loads(store.read("reference_models")["workload"][0])
    assert workload_config["workload"] == "hf_causal_lm" and workload_config["files_sha1"]
    sketches = store.read("gradient_sketches")
    assert sketches.height == store.read("corpus_shards").height and sketches["grad_norm"].is_finite().all()
    validation = store.read("selection_validation")
    tasks = set(store.read("task_sets")["task"])
    for method in ("grasp", "random-0", "full"):
        assert set(validation.filter(pl.col("method") == method)["task"]) == tasks, method
    assert validation["utility"].is_finite().all()


DOCUMENTS = ["The quick brown fox jumps over the lazy dog. " * 9 + "def add(a, b):\n    return a + b\n" * 4,
             "It was the best of times, it was the worst of times, " * 6 + "for i in range(10): pass"]


def test_documents_are_cut_into_token_windows_that_encode_to_their_own_tokens(workload):
    from grasp_pipeline.corpus import cut_examples

    documents = pl.DataFrame({"doc_id": ["a", "b"], "domain": ["d", "d"], "source": ["s", "s"], "text": DOCUMENTS})
    examples = cut_examples(documents, 128, cutter=workload.example_cuts)
    max_tokens = workload.params.max_tokens
    for doc_id, document in zip(["a", "b"], DOCUMENTS):
        tokens = workload._tokenize([document])[0]
        windows = examples.filter(pl.col("doc_id") == doc_id).sort("offset")["text"].to_list()
        window_tokens = [workload._tokenize([w])[0] for w in windows]
        assert len(windows) >= 3 and all(len(w) == max_tokens for w in window_tokens[:-1])
        joined = [t for w in window_tokens for t in w]
        assert joined == tokens[:len(joined)] and len(tokens) - len(joined) < max_tokens // 2
        assert "".join(windows) == document.encode()[:len("".join(windows).encode())].decode()
        encoded = workload.encode(windows)
        for row, ids in zip(encoded, window_tokens):  # the model sees exactly the window's tokens
            assert row[row >= 0].tolist() == ids
