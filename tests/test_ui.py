"""The real Dagster UI: `dagster dev` (webserver + daemon) on localhost with deploy/dagster.yaml.

A run with non-default config is launched through GraphQL (the `dagster-graphql` client),
queued, dequeued by the daemon and executed; its Delta tables are read back; staleness is
read through GraphQL after a corpus change; and headless Chromium opens the asset graph page
(finding every asset's name), the fidelity figure in a materialisation's metadata and the
launchpad of a one-asset job and the held-out verdict (a Markdown table and its figure) on the
curation_test page, saving a screenshot of each (`.grasp/test-artifacts/`, or under
GRASP_TEST_ARTIFACTS: asset_graph.png, fidelity_figure.png, launchpad.png, curation_test_verdict.png).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from grasp_pipeline.infra.storage import DeltaStore

from .conftest import materialize_everything, materialize_prepare, tiny_params, write_user_corpus
from .dagster_dev import REPO, Server, dagster_dev

# every table is an asset (assets/catalog.py), plus the trainer export
ASSETS = ["corpus_shards", "task_sets", "reference_models", "gradient_sketches", "task_sketches", "subset_plan",
          "subset_outcomes", "surrogates", "surrogate_candidates", "surrogate_predictions", "fidelity_report",
          "curated_selections", "selection_validation", "mixture_weights", "trainer_export", "lineage"]
RUN_SECONDS = 420
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                                else None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui")
    with dagster_dev(base, {"GRASP_WATCH_DIR": str(base / "incoming")}) as running:
        yield running


def _wait_for_run(client, run_id: str, server: Server) -> str:
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id)
        if status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return status
        time.sleep(2)
    pytest.fail(f"run {run_id} did not finish within {RUN_SECONDS}s (last status {status}):\n{server.log_tail()}")


def test_a_run_launched_through_graphql_with_non_default_config_succeeds_and_writes_its_tables(server):
    from dagster_graphql import DagsterGraphQLClient

    from assets.run_config import job_run_config

    params = tiny_params(corpus={"seed": 7}, sketch={"k": 24})  # not the launchpad defaults
    run_config = job_run_config("grasp_prepare", params, str(server.root))
    run_config["execution"] = {"config": {"in_process": {}}}  # one process: no per-step interpreter start
    client = DagsterGraphQLClient("127.0.0.1", port_number=server.port, timeout=60)
    run_id = client.submit_job_execution("grasp_prepare", run_config=run_config, tags={"test": "graphql"})
    status = _wait_for_run(client, run_id, server)
    assert status == dg.DagsterRunStatus.SUCCESS, server.log_tail()
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        shards = instance.get_dynamic_partitions("corpus_shards")  # registered by corpus_shards
    assert len(shards) > 1
    # the partitioned sketch job over every shard in one run, as the UI launches a partition range
    sketch_config = job_run_config("grasp_sketch", params, str(server.root))
    sketch_config["execution"] = {"config": {"in_process": {}}}
    sketch_run_id = client.submit_job_execution(
        "grasp_sketch", run_config=sketch_config,
        tags={"dagster/asset_partition_range_start": shards[0], "dagster/asset_partition_range_end": shards[-1]})
    assert _wait_for_run(client, sketch_run_id, server) == dg.DagsterRunStatus.SUCCESS, server.log_tail()

    store = DeltaStore(str(server.root))
    pool = store.read("corpus_shards")
    assert pool.group_by("domain").len()["len"].max() == params.corpus.pool_examples_per_domain
    # one k = 24 block per reference checkpoint (tiny: steps 4 and 8)
    assert {len(s) for s in store.read("gradient_sketches")["sketch"].to_list()} == {2 * 24}
    lineage = store.read("lineage").filter(pl.col("table") == "corpus_shards")
    assert json.loads(lineage["params"][0])["seed"] == 7 and lineage["dagster_run_id"][0] == run_id
    assert store.read("subset_plan").height == sum(getattr(params.plan, f) for f in (
        "uniform_fit", "uniform_holdout", "dirichlet_fit", "dirichlet_holdout", "stratified_fit", "stratified_holdout"))

    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run.tags.get("grasp/torch") == "true"  # the job's tag, limited by the run queue
        assert instance.get_dynamic_partitions("retraining_batches")  # registered by subset_plan
    stale = server.stale_status()
    assert all(stale[a] == "FRESH" for a in PREPARED_ASSETS), stale
    assert stale["task_sketches"] == stale["surrogates"] == "MISSING"


PREPARED_ASSETS = ["corpus_shards", "task_sets", "reference_models", "gradient_sketches", "subset_plan"]


def test_schedule_and_sensors_are_loaded_and_off_by_default(server):
    data = server.graphql("""{ repositoriesOrError { ... on RepositoryConnection { nodes {
        schedules { name cronSchedule scheduleState { status } }
        sensors { name sensorState { status } } } } } }""")
    (repository,) = data["repositoriesOrError"]["nodes"]
    schedules = {s["name"]: s for s in repository["schedules"]}
    assert schedules["grasp_reoptimise_mixture_schedule"]["scheduleState"]["status"] == "STOPPED"
    assert schedules["grasp_reoptimise_mixture_schedule"]["cronSchedule"] == os.environ.get("GRASP_MIXTURE_CRON",
                                                                                            "0 3 * * *")
    sensors = {s["name"]: s["sensorState"]["status"] for s in repository["sensors"]}
    assert sensors == {"grasp_new_corpus_files": "STOPPED", "grasp_automation": "STOPPED"}


def test_a_corpus_change_marks_downstream_assets_stale_in_the_ui(server, tmp_path):
    if not DeltaStore(str(server.root)).exists("corpus_shards"):
        pytest.skip("needs the GraphQL-launched run of the first test")
    corpus = write_user_corpus(tmp_path / "new" / "corpus.jsonl")
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        result = materialize_prepare(server.root, tiny_params(corpus={"corpus_path": str(corpus)}), instance,
                                     ["corpus_shards"])
        assert result.success
    stale = server.stale_status()
    assert stale["corpus_shards"] == "FRESH"
    for asset in ["reference_models", "subset_plan"]:
        assert stale[asset] == "STALE", stale
    # the new pool's shards are the partitions of gradient_sketches now: none of them is fresh
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        shards = instance.get_dynamic_partitions("corpus_shards")
    assert shards == sorted(DeltaStore(str(server.root)).read("corpus_shards")["shard"].unique().to_list())
    by_partition = server.stale_status_by_partition("gradient_sketches", shards)
    assert set(by_partition) <= {"STALE", "MISSING"} and by_partition, by_partition


needs_chromium = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                    reason="no Chromium browser binary (apt-get install chromium chromium-driver; "
                                           ".ci/run does)")
ARTIFACTS = Path(os.environ.get("GRASP_TEST_ARTIFACTS", REPO / ".grasp" / "test-artifacts"))


@pytest.fixture(scope="module")
def browser(server):
    """Headless Chromium (selenium + chromedriver) with a fresh profile, the newsletter dialog dismissed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(60)
        driver.get(f"{server.url}/server_info")
        driver.execute_script("window.localStorage.setItem('communityNux', '1')")  # no newsletter dialog
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _page_text(driver) -> str:
    return driver.execute_script("return document.body.innerText")


def _wait_for_text(driver, expected: list[str], seconds: float = 90) -> str:
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        text = _page_text(driver)
        if all(e in text for e in expected):
            return text
        time.sleep(1)
    return text


@needs_chromium
def test_headless_chromium_shows_the_asset_graph(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.set_window_size(1700, 2300)  # the whole graph of 16 assets in one view
    driver.get(f"{server.url}/asset-groups")  # "Global asset lineage": the asset graph
    _wait_for_text(driver, ["Global asset lineage", "sketches"])
    time.sleep(2)
    ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()  # expand groups (remembered)
    time.sleep(2)
    driver.get(f"{server.url}/asset-groups")  # reloaded, the expanded graph is laid out to fit
    _wait_for_text(driver, ["Global asset lineage", "corpus_shards"])
    zoom_out = driver.find_element(By.XPATH, "//*[@aria-label='zoom_out']/ancestor::button[1]")
    for _ in range(2):
        driver.execute_script("arguments[0].click()", zoom_out)
        time.sleep(1)
    time.sleep(3)  # let the graph finish its layout before the picture
    text = _page_text(driver)
    found = [a for a in ASSETS if a in text]
    screenshot = ARTIFACTS / "asset_graph.png"
    assert driver.save_screenshot(str(screenshot))
    # a zoomed-out graph shortens long names ("select…_validation"); hovering shows them whole
    for node in driver.find_elements(By.XPATH, "//*[local-name()='foreignObject']//div[contains(text(), '…')]"):
        ActionChains(driver).move_to_element(node).perform()
        time.sleep(1)
        text = _page_text(driver)
        found += [a for a in ASSETS if a in text and a not in found]
    driver.set_window_size(1600, 1000)
    assert sorted(found) == sorted(ASSETS), f"asset names shown: {found}"
    assert screenshot.stat().st_size > 20_000


@pytest.fixture(scope="module")
def surrogate_materialised(server, tmp_path_factory):
    """The whole tiny graph materialised into the server's instance (own storage root): the
    surrogates asset then has a materialisation whose metadata holds the fidelity figures."""

    root = tmp_path_factory.mktemp("ui-full") / "storage"
    with dg.DagsterInstance.from_config(str(server.home)) as instance:
        results = materialize_everything(root, tiny_params(), instance)
    assert all(r.success for r in results)
    return root


@needs_chromium
def test_headless_chromium_opens_the_fidelity_figure_in_a_materialisations_metadata(server, browser,
                                                                                  surrogate_materialised):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{server.url}/assets/surrogates?view=events")
    text = _wait_for_text(driver, ["figure.grasp_predicted_vs_actual.png", "mlflow_run_id"])
    assert "figure.grasp_predicted_vs_actual.png" in text, text[:3000]
    row = driver.find_element(By.XPATH, "//tr[.//*[contains(text(), 'figure.grasp_predicted_vs_actual.png')]]")
    opener = row.find_element(By.XPATH, ".//a[contains(., 'Show Markdown')]")  # markdown opens in a dialog
    driver.execute_script("arguments[0].click()", opener)
    deadline = time.monotonic() + 30
    images = []
    while time.monotonic() < deadline and not images:
        images = [img for img in driver.find_elements(By.XPATH, "//img[starts-with(@src, 'data:image/png;base64,')]")
                  if driver.execute_script("return arguments[0].naturalWidth", img) > 100]
        time.sleep(0.5)
    assert images, _page_text(driver)[:3000]
    time.sleep(1)
    screenshot = ARTIFACTS / "fidelity_figure.png"
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 20_000


@needs_chromium
def test_headless_chromium_finds_the_markdown_verdict_and_its_figure_on_the_curation_test_page(
        server, browser, surrogate_materialised):
    from selenium.webdriver.common.by import By

    from grasp_pipeline.evaluation.summary import verdict_table

    rows = verdict_table(DeltaStore(str(surrogate_materialised)), "curation_test_verdict")
    driver = browser
    driver.get(f"{server.url}/assets/curation_test?view=events")
    text = _wait_for_text(driver, ["verdict.grasp_vs_random_pick.ci_low", "mlflow_run_id"])
    assert "verdict.grasp_vs_random_pick.ci_low" in text, text[:3000]
    row = driver.find_element(By.XPATH, "//tr[.//*[text()='verdict']]")
    driver.execute_script("arguments[0].click()", row.find_element(By.XPATH, ".//a[contains(., 'Show Markdown')]"))
    # the dialog renders the Markdown: a table with every comparison, and the figure below it
    expected = ["95% interval", "dev retrainings", *rows["comparison"].to_list()]
    text = _wait_for_text(driver, expected, seconds=30)
    assert all(e in text for e in expected), text[:3000]
    cells = driver.find_elements(By.XPATH, "//table//td[contains(., 'grasp − random_pick')]")
    assert cells, "the verdict is not shown as a table"
    images = [img for img in driver.find_elements(By.XPATH, "//img[starts-with(@src, 'data:image/png;base64,')]")
              if driver.execute_script("return arguments[0].naturalWidth", img) > 100]
    assert images, text[:3000]
    time.sleep(1)
    screenshot = ARTIFACTS / "curation_test_verdict.png"
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 20_000


@needs_chromium
def test_headless_chromium_opens_the_launchpad_of_a_one_asset_job_with_its_config(server, browser):
    data = server.graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
    (repository,) = data["repositoriesOrError"]["nodes"]
    address = f"{repository['name']}@{repository['location']['name']}"
    driver = browser
    driver.get(f"{server.url}/locations/{address}/jobs/grasp_reoptimise_mixture/playground")
    text = _wait_for_text(driver, ["mixture_weights", "budget_fraction", "max_repeats"])
    assert "budget_fraction" in text and "max_repeats" in text, text[:3000]  # the launchpad's config editor
    assert "Launch Run" in text or "Materialize" in text
    screenshot = ARTIFACTS / "launchpad.png"
    assert driver.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 20_000
