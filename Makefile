# Two commands do everything:  `make demo` (whole pipeline, embedded corpus)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DAGSTER_HOME ?= $(CURDIR)/.grasp/dagster_home
export DAGSTER_HOME
GRASP_ROOT ?= $(CURDIR)/.grasp/storage
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: install demo smoke test ui mlflow-ui dagster-home browser clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install          ## the main job end to end on the embedded corpus (≤ 10 min on 2 cores)
	$(VENV)/bin/grasp run --profile demo

smoke: install         ## the same graph, smaller (≤ 3 min)
	$(VENV)/bin/grasp run --profile smoke

test: install          ## the test suite (real Delta tables, MLflow store, Dagster runs, the UI in Chromium)
	$(PY) -m pytest -q

dagster-home:          ## DAGSTER_HOME with deploy/dagster.yaml (copied only when it has no settings yet)
	mkdir -p $(DAGSTER_HOME)
	test -s $(DAGSTER_HOME)/dagster.yaml || cp deploy/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

ui: install dagster-home  ## Dagster UI + daemon on http://127.0.0.1:3000 (same instance as `grasp run`)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

mlflow-ui: install     ## MLflow UI on http://127.0.0.1:5000 over the storage root (GRASP_ROOT)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(GRASP_ROOT)/mlflow.db -h 127.0.0.1 -p $(MLFLOW_PORT)

browser:               ## Chromium + chromedriver for tests/test_ui.py (Debian packages; run as root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

clean:                 ## forget every table, MLflow run and Dagster run (keeps the venv)
	rm -rf .grasp
