"""The deploy files hold no secrets and pin what they install: no default passwords in the Helm
values, the broker from the environment, an image that runs as an unprivileged user with every
version pinned to the ones the tests ran against."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def walk(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, path + (str(key),))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, path + (str(i),))
    else:
        yield path, value


def test_the_helm_values_set_no_password_and_keep_the_bundled_postgres_and_its_default_password_off():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    secrets = [".".join(p) for p, v in walk(values) if re.search(r"password|secret_key|token", p[-1], re.I) and v]
    assert secrets == []
    assert values["postgresql"]["enabled"] is False
    assert values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_the_celery_broker_comes_from_the_environment():
    execution = yaml.safe_load((DEPLOY / "celery.yaml").read_text())["execution"]["config"]
    assert execution == {"broker": {"env": "GRASP_CELERY_BROKER"}, "backend": {"env": "GRASP_CELERY_BROKER"}}
    from assets.definitions_celery import celery_run_config

    assert celery_run_config() == {"execution": {"config": execution}}


def test_the_image_runs_as_an_unprivileged_user():
    lines = [line.strip() for line in (DEPLOY / "k8s" / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert lines.index(next(line for line in lines if line.startswith("USER "))) > max(
        i for i, line in enumerate(lines) if line.startswith("RUN "))  # nothing runs as root after it


def test_the_image_pins_its_base_and_every_dependency_to_the_tested_versions():
    dockerfile = (DEPLOY / "k8s" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert '"torch==' in dockerfile and "-c deploy/k8s/constraints.txt" in dockerfile
    pins = dict(line.split("==") for line in (DEPLOY / "k8s" / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"] + project["optional-dependencies"]["scale"]}
    assert needed <= set(pins), needed - set(pins)
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:  # (the k8s-only integrations are not in the test environment)
            continue
        assert installed.split("+")[0] == pinned, f"{name}: image pins {pinned}, the tests ran {installed}"
