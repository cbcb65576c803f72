# Two commands do everything:  `make demo` (whole pipeline, embedded corpus)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DAGSTER_HOME ?= $(CURDIR)/.grasp/dagster_home
export DAGSTER_HOME
GRASP_ROOT ?= $(CURDIR)/.grasp/storage
UI_PORT ?= 3000
MLFLOW_PORT ?= 5000

.PHONY: install lock lint demo smoke test ui mlflow-ui dagster-home browser services redis s3-local mlflow-server celery-worker clean

# requirements.lock pins every dependency of every extra (pip-compile output from pyproject.toml);
# installing under it (-c) gives a fresh machine today the versions the tests ran last month.
$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# torch: the CPU build these machines hold on local disk; the lock keeps the plain version so a
# GPU machine gets the CUDA build of the same release (see README, "GPU").
TORCH_VERSION ?= 2.13.0
LOCK_VENV := .grasp/lock-venv
lock:                  ## refresh requirements.lock from pyproject.toml (newest versions the registry serves)
	test -x $(LOCK_VENV)/bin/pip-compile || { python3 -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q pip-tools==7.7.0; }
	echo "torch==$(TORCH_VERSION)" > $(LOCK_VENV)/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile -q --upgrade --all-extras --strip-extras \
	  --unsafe-package grasp-pipeline --no-emit-index-url --no-emit-find-links -c $(LOCK_VENV)/torch.txt -o requirements.lock pyproject.toml
	sed -i -E 's/^(torch==[^+ ]+)\+[a-z0-9]+/\1/; s#^( +\#   -c )\.grasp/lock-venv/torch.txt#\1TORCH_VERSION in the Makefile#' requirements.lock

demo: install          ## the main job end to end on the embedded corpus (≈ 6 min on an idle 2-core machine)
	$(VENV)/bin/grasp run --profile demo

smoke: install         ## the same graph, smaller (≤ 3 min)
	$(VENV)/bin/grasp run --profile smoke

lint: install          ## ruff lint (pyproject.toml [tool.ruff]; why no formatter: see there)
	$(VENV)/bin/ruff check .

test: install          ## the test suite (real Delta tables, MLflow store, Dagster runs, the UI in Chromium)
	$(PY) -m pytest -q

dagster-home:          ## DAGSTER_HOME with deploy/dagster.yaml (copied only when it has no settings yet)
	mkdir -p $(DAGSTER_HOME)
	test -s $(DAGSTER_HOME)/dagster.yaml || cp deploy/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

ui: install dagster-home  ## Dagster UI + daemon on http://127.0.0.1:3000 (same instance as `grasp run`)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

mlflow-ui: install     ## MLflow UI on http://127.0.0.1:5000 over the storage root (GRASP_ROOT); one worker, no job consumers
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --workers 1 \
	  --backend-store-uri sqlite:///$(GRASP_ROOT)/mlflow.db -h 127.0.0.1 -p $(MLFLOW_PORT)

browser:               ## Chromium + chromedriver for tests/test_ui.py (Debian packages; run as root)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

services:              ## system services the tests start on 127.0.0.1: Debian's redis-server (run as root)
	command -v redis-server >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; }

REDIS_PORT ?= 6379
S3_PORT ?= 9000
MLFLOW_SERVER_PORT ?= 5001

redis:                 ## Redis broker for the celery profile on 127.0.0.1:$(REDIS_PORT) (foreground)
	redis-server --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no

s3-local:              ## S3-compatible server (moto) on http://127.0.0.1:$(S3_PORT) (foreground; in memory)
	$(VENV)/bin/moto_server -H 127.0.0.1 -p $(S3_PORT)

mlflow-server:         ## MLflow tracking server on http://127.0.0.1:$(MLFLOW_SERVER_PORT), store in .grasp/mlflow-server
	mkdir -p .grasp/mlflow-server
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_SERVER_PORT) \
	  --backend-store-uri sqlite:///$(CURDIR)/.grasp/mlflow-server/mlflow.db \
	  --artifacts-destination $(CURDIR)/.grasp/mlflow-server/artifacts

WORKER ?= worker1
celery-worker: install dagster-home  ## one Celery worker of the celery profile (deploy/celery.yaml); start one per core/machine
	GRASP_CELERY_BROKER=$${GRASP_CELERY_BROKER:-redis://127.0.0.1:$(REDIS_PORT)/0} \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHONPATH=$(CURDIR) $(VENV)/bin/dagster-celery worker start \
	  -A dagster_celery.app -y deploy/celery.yaml -n $(WORKER) -- --pool=solo

clean:                 ## forget every table, MLflow run and Dagster run (keeps the venv)
	rm -rf .grasp
