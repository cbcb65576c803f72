# Two commands do everything:  `make demo` (whole pipeline, embedded corpus)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DAGSTER_HOME ?= $(CURDIR)/.grasp/dagster_home
export DAGSTER_HOME

.PHONY: install demo smoke test ui mlflow-ui clean

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

test: install          ## the test suite (real Delta tables, MLflow store and Dagster runs)
	$(PY) -m pytest -q

ui: install            ## Dagster UI on http://127.0.0.1:3000 (same instance as `grasp run`)
	mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

mlflow-ui: install     ## MLflow UI on http://127.0.0.1:5000 over the default storage root
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.grasp/storage/mlflow.db -h 127.0.0.1 -p 5000

clean:                 ## forget every table, MLflow run and Dagster run (keeps the venv)
	rm -rf .grasp
