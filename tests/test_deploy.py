"""The deploy files hold no secrets and pin what they install: no default passwords in the Helm
values, the broker from the environment, an image that runs as an unprivileged user with every
version pinned to the ones the tests ran against."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    from assets.deploy.definitions_celery import celery_run_config

    assert celery_run_config() == {"execution": {"config": execution}}


def test_the_image_runs_as_an_unprivileged_user():
    lines = [line.strip() for line in (DEPLOY / "k8s" / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert lines.index(next(line for line in lines if line.startswith("USER "))) > max(
        i for i, line in enumerate(lines) if line.startswith("RUN "))  # nothing runs as root after it


def lock_pins() -> dict[str, str]:
    """requirements.lock as {normalised name: pinned version}; every line there pins one version."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier  # exactly one `==`
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_lock_pins_every_requirement_of_every_extra_to_a_version_pyproject_allows():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pins = lock_pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name == "grasp-pipeline":  # an extra that includes another
            continue
        assert name in pins, f"requirements.lock lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, pyproject.toml asks {requirement}: run `make lock`"


def test_the_lock_keeps_torch_at_its_plain_release_so_cpu_and_gpu_builds_both_satisfy_it():
    assert re.fullmatch(r"\d+\.\d+\.\d+", lock_pins()["torch"])  # no +cpu / +cu local label


def test_the_install_the_ci_and_the_image_all_install_under_the_one_lock():
    makefile = (REPO / "Makefile").read_text()
    install = makefile[makefile.index("$(VENV)/.installed:"):makefile.index("\ninstall:")]
    assert "requirements.lock" in install.splitlines()[0]  # a new lock reinstalls
    (project,) = [line for line in install.splitlines() if '-e ".[dev]"' in line]
    assert "-c requirements.lock" in project  # (pip itself is upgraded first, outside the lock)
    assert "make test" in (REPO / ".ci" / "run").read_text() and "make browser services install" in (
        REPO / ".ci" / "run").read_text()
    dockerfile = (DEPLOY / "k8s" / "Dockerfile").read_text()
    assert "-c requirements.lock" in dockerfile and "COPY pyproject.toml README.md requirements.lock" in dockerfile
    assert not list(REPO.glob("**/constraints.txt")), "one lock: constraints files are derived from nothing"


def test_the_image_pins_its_base_and_installs_the_locked_torch():
    dockerfile = (DEPLOY / "k8s" / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base), base
    assert f'"torch=={lock_pins()["torch"]}"' in dockerfile
