"""The vision workload: digits images under documented shifts, through the same asset graph."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from grasp_pipeline.config import RetrainParams, SelectionParams, with_overrides
from grasp_pipeline.corpus import cut_examples, load_documents
from grasp_pipeline.infra.storage import DeltaStore
from grasp_pipeline.selection import label_quota, top_k
from grasp_pipeline.sketching import GradientSketcher
from grasp_pipeline.stages import run_corpus_shards, run_curated_selection
from grasp_pipeline.training.retrain import Recipe, StackedTrainer, unstack
from grasp_pipeline.workloads import make_workload
from grasp_pipeline.workloads.vision import (
    DIGITS_CORPUS,
    DOMAINS,
    LEVELS,
    VisionParams,
    VisionWorkload,
    build_digits_documents,
    image_to_text,
    text_to_image,
)

from .conftest import tiny_params

ATOL = 1e-5


@pytest.fixture(scope="module")
def corpus_rows() -> list[dict]:
    with gzip.open(DIGITS_CORPUS, "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def workload(request):
    return VisionWorkload(VisionParams(vision_model=request.param, vision_channels=4, hidden=16))


@pytest.fixture(scope="module")
def pool(workload, corpus_rows):
    texts = [r["text"] for r in corpus_rows[::450]]  # every domain, several labels
    return workload.encode(texts)


def levels(domain_rows: list[dict]) -> np.ndarray:
    return np.stack([text_to_image(r["text"])[1] for r in domain_rows]).astype(float)


# -----------------------------------------------------------------------------
# the corpus format and the shifts


def test_image_text_round_trip_and_encode():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, LEVELS + 1, size=(8, 8))
    text = image_to_text(7, pixels * 16 / LEVELS)  # the 0–16 scale in, levels 0–15 out
    assert len(text) == 2 + 8 * 8 + 7 and text.startswith("7:")
    label, back = text_to_image(text)
    assert label == 7 and np.array_equal(back, pixels)
    encoded = VisionWorkload().encode([text, image_to_text(0, np.zeros((8, 8)))])
    assert encoded.shape == (2, 65) and encoded.dtype == torch.float32
    assert encoded[0, 0] == 7 and encoded[1, 0] == 0
    torch.testing.assert_close(encoded[0, 1:], torch.as_tensor(pixels.reshape(-1) / LEVELS, dtype=torch.float32))


@pytest.mark.parametrize("bad", ["7:0000", "x:" + "/".join(["00000000"] * 8), "12:" + "/".join(["00000000"] * 8),
                                 "7:" + "/".join(["0000000g"] * 8), "plain text"])
def test_a_row_that_is_not_an_image_is_refused_with_the_format(bad):
    with pytest.raises(ValueError, match="8 rows of 8 hex digits|hex digits"):
        VisionWorkload().encode([bad])


def test_shipped_corpus_has_every_image_under_every_shift_in_one_order(corpus_rows):
    assert len(corpus_rows) == 1797 * len(DOMAINS)
    by_domain = {d: [r for r in corpus_rows if r["domain"] == d] for d in DOMAINS}
    orders = {d: [r["id"].split("-")[1] for r in rows] for d, rows in by_domain.items()}
    assert all(len(o) == 1797 and o == orders["clean"] for o in orders.values())  # same base image order
    labels = {d: [text_to_image(r["text"])[0] for r in rows] for d, rows in by_domain.items()}
    assert all(lab == labels["clean"] for lab in labels.values())
    clean, thick, noisy, inverted = (levels(by_domain[d]) for d in ("clean", "thick", "noisy", "inverted"))
    rotated = levels(by_domain["rotated"])
    assert (thick >= clean).all() and thick.sum() > 1.3 * clean.sum()  # dilation only adds ink
    assert np.abs(inverted - (LEVELS - clean)).max() <= 1  # 16 − x, up to rounding
    assert 1.0 < np.abs(noisy - clean).mean() < 5.0
    moved = np.abs(rotated - clean).mean(axis=(1, 2))
    assert (moved > 0.5).mean() > 0.95  # every image turned by at least 25°


def test_shipped_corpus_is_what_the_builder_makes_from_scikit_learn(corpus_rows):
    pytest.importorskip("sklearn")
    rebuilt = build_digits_documents(seed=0)
    assert [r["id"] for r in rebuilt] == [r["id"] for r in corpus_rows]
    assert [r["text"][:2] for r in rebuilt] == [r["text"][:2] for r in corpus_rows]
    # rounding in another scipy release may move a level by one, nothing more
    assert np.abs(levels(rebuilt) - levels(corpus_rows)).max() <= 1


def test_whole_documents_are_never_cut_or_dropped():
    rows = pl.DataFrame({"doc_id": ["a", "b", "c"], "domain": ["d"] * 3, "source": ["s"] * 3,
                         "text": ["x" * 300, "yy", "z" * 50]})
    whole = cut_examples(rows, 128, whole_documents=True)
    assert whole["text"].to_list() == rows["text"].to_list() and whole["offset"].to_list() == [0, 0, 0]
    assert cut_examples(rows, 128).height != 3  # the byte cutter would split and drop them


def test_corpus_stage_uses_the_digits_corpus_with_one_image_per_example(tmp_path):
    params = tiny_params().corpus
    store = DeltaStore(str(tmp_path / "storage"))
    # 32 < a row's 73 bytes: rows must stay whole
    result = run_corpus_shards(store, params, 32, make_workload("vision"))
    pool, tasks = store.read("corpus_shards"), store.read("task_sets")
    assert sorted(pool["domain"].unique()) == sorted(DOMAINS) and sorted(tasks["task"].unique()) == sorted(DOMAINS)
    assert pool.height == len(DOMAINS) * params.pool_examples_per_domain
    assert tasks.height == len(DOMAINS) * params.task_examples_per_domain
    assert result.metrics["examples_cut"] == 1797 * len(DOMAINS)
    VisionWorkload().encode(pool["text"].to_list() + tasks["text"].to_list())  # every row is one whole image
    assert pool["label"].to_list() == [t.split(":")[0] for t in pool["text"]]
    assert "label" not in tasks.columns
    # the task images are the same base images in every domain, and none of them is in any pool
    task_ids = store.read("task_sets").join(
        load_documents(DIGITS_CORPUS)[0].select("doc_id", "text", "domain"), on=["text", "domain"])
    task_images = {i.split("-")[1] for i in task_ids["doc_id"]}
    assert len(task_images) == params.task_examples_per_domain
    assert not task_images & {i.split("-")[1] for i in pool["doc_id"]}


# -----------------------------------------------------------------------------
# the models work with the vmapped sketcher and trainer


def test_vmapped_sketches_equal_projected_loop_gradients(workload, pool):
    model = workload.build_model(3)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    sketcher = GradientSketcher(workload, params, "gaussian", k=24, seed=1, chunk_size=4)  # 10 = 4 + 4 + 2
    out = sketcher.sketch_examples(pool)
    flats, losses = [], []
    for i in range(pool.shape[0]):
        loss = workload.example_losses(model, pool[i:i + 1])[0]
        flats.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))]))
        losses.append(float(loss.detach()))
    flat = torch.stack(flats)
    assert (flat.norm(dim=1) > 1e-2).all()  # non-trivial gradients, so the tolerance is a real check
    np.testing.assert_allclose(out.sketch, sketcher.projector.project(flat).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.grad_norm, flat.norm(dim=1).numpy(), rtol=1e-5)
    np.testing.assert_allclose(out.loss, losses, rtol=1e-6)


def test_the_kronecker_projection_sketches_images_too(workload, pool):
    """Its shared-module probe runs on the workload's own examples, not on text."""
    model = workload.build_model(3)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        sketcher = GradientSketcher(workload, params, "kronecker", k=24, seed=1, chunk_size=4, factor_dim=4)
    except ValueError as error:  # layers the factored projection cannot take (conv) are refused by name
        assert "use projection 'sjlt'" in str(error)
        return
    out = sketcher.sketch_examples(pool)
    exact = GradientSketcher(workload, params, "sjlt", k=24, seed=1, chunk_size=4).sketch_examples(pool)
    assert np.isfinite(out.sketch).all() and np.abs(out.sketch).max() > 0
    np.testing.assert_allclose(out.grad_norm, exact.grad_norm, rtol=1e-4)  # both exact per-example norms
    np.testing.assert_allclose(out.loss, exact.loss, rtol=1e-6)


def test_training_models_together_equals_training_each_alone(workload, pool):
    trainer = StackedTrainer(workload, Recipe.from_params(RetrainParams(), steps=5, batch_size=3, lr=1e-2))
    members = [np.array([0, 2, 4, 6]), np.arange(1, 10)]
    together = trainer.train(pool, members, [(0, 0), (0, 1)])
    first = next(iter(together))
    assert not torch.equal(together[first][0], together[first][1])
    for j, rows in enumerate(members):
        alone = unstack(trainer.train(pool, [rows], [(0, j)]), 0)
        for name, value in unstack(together, j).items():
            torch.testing.assert_close(value, alone[name], atol=ATOL, rtol=0, msg=name)


def test_training_on_a_domain_lowers_that_domains_loss_most(corpus_rows):
    """The shifts are real: a model trained on one domain fits that domain better than inverted images."""
    workload = VisionWorkload()
    by_domain = {d: [r["text"] for r in corpus_rows if r["domain"] == d] for d in ("clean", "inverted")}
    train = workload.encode(by_domain["clean"][:600])
    trainer = StackedTrainer(workload, Recipe.from_params(RetrainParams(), steps=40, batch_size=16))
    params = trainer.train(train, [np.arange(600)], [(0, 0)])
    clean_loss = trainer.example_losses(params, workload.encode(by_domain["clean"][-200:])).mean()
    inverted_loss = trainer.example_losses(params, workload.encode(by_domain["inverted"][-200:])).mean()
    assert clean_loss < 1.5 < np.log(10) < inverted_loss


def test_top_k_with_a_group_quota_takes_the_best_of_each_group_up_to_the_quota():
    scores = np.array([9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0])
    groups = np.array(["a", "a", "a", "b", "a", "b", "c"])
    assert top_k(scores, 4).rows.tolist() == [0, 1, 2, 3]
    assert top_k(scores, 4, groups=groups, max_per_group=2).rows.tolist() == [0, 1, 3, 5]
    assert top_k(scores, 9, np.array([1]), groups=groups, max_per_group=2).rows.tolist() == [0, 2, 3, 5, 6]
    assert label_quota(groups, 7) == 3 and label_quota(groups, 6) == 2


def test_unknown_vision_model_is_refused():
    with pytest.raises(ValueError, match="vision_model"):
        make_workload("vision", vision_model="resnet")


# -----------------------------------------------------------------------------
# the whole graph, as a user runs it


def test_grasp_run_with_workload_vision_selects_and_validates_on_the_digits(tmp_path, tiny_config_file):
    home = tmp_path / "dagster_home"
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("grasp")), "run", "--workload", "vision", "--profile", "smoke",
         "--config", str(tiny_config_file), "--root", str(tmp_path / "storage")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**os.environ, "DAGSTER_HOME": str(home)})
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "workload=vision" in completed.stdout and "Holdout fidelity" in completed.stdout
    store = DeltaStore(str(tmp_path / "storage"))
    assert set(store.read("corpus_shards")["domain"]) == set(DOMAINS)
    assert json.loads(store.read("reference_models")["workload"][0])["workload"] == "vision"
    validation = store.read("selection_validation")
    for method in ("grasp", "grad_dot", "datamodel", "random-0", "full"):
        assert sorted(validation.filter(pl.col("method") == method)["task"]) == sorted(DOMAINS), method
    assert validation["utility"].is_finite().all()
    # classification pools: score-based selections are balanced across digits, random ones are not forced to be
    selections = store.read("curated_selections").join(store.read("corpus_shards").select("example_id", "label"),
                                                       on="example_id")
    budget = selections.filter(pl.col("method") == "grasp")["budget"][0]
    per_label = selections.group_by("method", "label").len()
    for method in ("grasp", "grad_dot", "datamodel"):
        assert per_label.filter(pl.col("method") == method)["len"].max() <= -(-budget // 10), method
    with pytest.raises(ValueError, match="balance_labels"):
        run_curated_selection(store, SelectionParams(budget_fraction=0.2, max_per_domain=3))


def test_grasp_config_prints_the_vision_workload_for_the_launchpad(capsys):
    from assets.cli import main

    assert main(["config", "--workload", "vision", "--job", "grasp_prepare"]) == 0
    assert "name: vision" in capsys.readouterr().out
    assert main(["config", "--workload", "no_such_workload"]) == 2
    assert "no_such_workload" in capsys.readouterr().err


def test_pipeline_params_and_the_launchpad_have_the_workload_fields():
    from assets.resources import WorkloadResource

    params = with_overrides(tiny_params(), {"workload": {"name": "vision", "vision_model": "cnn",
                                                         "vision_channels": 4}})
    assert params.workload.model_params() == {"vision_model": "cnn", "vision_channels": 4, "hidden": 64}
    fields = WorkloadResource.model_fields
    assert {"name", "vision_model", "vision_channels", "hf_model_path", "hf_model_config", "hf_tokenizer_path",
            "max_tokens"} <= set(fields)
    assert "vision" in fields["name"].description and "hf_causal_lm" in fields["name"].description
