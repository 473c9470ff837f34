"""prefect.yaml and the work pool templates of deployments/templates/: what deployments/prefect_yaml.py
makes, committed; read by Prefect's own `prefect deploy` code; deployed with `prefect deploy --all`
against a real `prefect server start` on a process pool; the templates accepted by the server as
Docker and Kubernetes pools and resolved by Prefect's worker code into a GPU request for the train
deployment's runs (and none for the others).

prefect-docker and prefect-kubernetes are not installed: the checks use Prefect core's own schema
checks and job configuration code, and docker-py (a Prefect dependency) for the Docker request.
About 50 s, half of it `prefect deploy --all` (it imports each flow).
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deployments.prefect_yaml import (GPU_JOB_VARIABLES, PROCESS_POOL, WORK_DIR, pool_template, pool_template_json,
                                      prefect_yaml)

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "deployments" / "templates"
HEARTBEAT_ENV = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
REGENERATE = {
    "prefect.yaml": "python -m deployments.prefect_yaml > prefect.yaml",
    "docker": "python -m deployments.prefect_yaml --pool-template docker > deployments/templates/docker-pool.json",
    "kubernetes": "python -m deployments.prefect_yaml --pool-template kubernetes "
                  "> deployments/templates/kubernetes-pool.json",
}


@pytest.fixture(scope="module")
def served():
    """What `crawl2chat serve` serves, by deployment name, from the repo root (where `crawl2chat serve`
    and `prefect deploy` run: their entrypoints are relative to it)."""
    from deployments.serve import deployments

    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        return {d.name: d for d in deployments("tiny")}
    finally:
        os.chdir(cwd)


def tiny_config(work_dir: str) -> dict:
    from flows.config import load_config

    return {**load_config("tiny").model_dump(mode="json"), "work_dir": work_dir}


def parameters(name: str, work_dir: str) -> dict:
    """A deployment's run form: the tiny preset, or for the ablation, the tiny preset's base against its
    two controls."""
    if name != "ablate":
        return {"config": tiny_config(work_dir)}
    from flows.ablation_plan import AblationConfig

    return {"ablation": AblationConfig(name="calibration", preset="tiny", work_dir=work_dir).model_dump(mode="json")}


GPU_DEPLOYMENTS = {"train", "ablate"}  # the deployments whose runs train models


# --- the files -----------------------------------------------------------------------------------

def test_prefect_yaml_is_the_generated_one():
    assert (REPO / "prefect.yaml").read_text() == prefect_yaml(), \
        f"prefect.yaml differs from deployments/serve.py's deployments: regenerate it with `{REGENERATE['prefect.yaml']}`"


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_each_pool_template_is_the_generated_one(kind):
    assert (TEMPLATES / f"{kind}-pool.json").read_text() == pool_template_json(kind), \
        f"deployments/templates/{kind}-pool.json is out of date: regenerate it with `{REGENERATE[kind]}`"


def test_prefects_deploy_loader_reads_every_served_deployment_with_its_full_tiny_config(served):
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from rich.console import Console

    # The function `prefect deploy` reads prefect.yaml with; a file it cannot validate comes back empty.
    console_out = io.StringIO()
    configs, _ = _load_deploy_configs_and_actions(REPO / "prefect.yaml", console=Console(file=console_out))
    assert [c["name"] for c in configs] == list(served), console_out.getvalue()
    for config in configs:
        d = served[config["name"]]
        assert config["entrypoint"] == d.entrypoint
        assert config["tags"] == d.tags
        assert config["parameters"] == parameters(d.name, WORK_DIR)
        assert config["work_pool"]["name"] == PROCESS_POOL
        gpu = GPU_JOB_VARIABLES if d.name in GPU_DEPLOYMENTS else {}
        assert config["work_pool"]["job_variables"] == {"env": HEARTBEAT_ENV, **gpu}
        crons = [s.schedule.cron for s in d.schedules]
        assert [s["cron"] for s in config.get("schedules") or []] == crons
    assert any(config.get("schedules") for config in configs)  # the weekly data refresh


def _deploy_time(value, monkeypatch, **environ):
    """`value` after the templating `prefect deploy` applies to a deployment's fields (Prefect 3.9.1,
    prefect/cli/deploy/_core.py: environment variables first, then step outputs, of which there are none)."""
    from prefect.utilities.templating import apply_values

    monkeypatch.delenv("CRAWL2CHAT_WORK_DIR", raising=False)
    for key, val in environ.items():
        monkeypatch.setenv(key, val)
    value = apply_values(value, dict(os.environ), remove_notset=False)
    return apply_values(value, {}, warn_on_notset=True, skip_prefixes=["ctx."])


def test_the_work_dir_is_the_deploying_shells_CRAWL2CHAT_WORK_DIR_and_empty_with_a_warning_if_unset(monkeypatch):
    assert _deploy_time({"work_dir": WORK_DIR}, monkeypatch, CRAWL2CHAT_WORK_DIR="/srv/work") == {"work_dir": "/srv/work"}
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = logging.getLogger("prefect.utilities.templating")
    logger.addHandler(handler)
    try:
        assert _deploy_time({"work_dir": WORK_DIR}, monkeypatch) == {"work_dir": ""}
    finally:
        logger.removeHandler(handler)
    assert any("{{ $CRAWL2CHAT_WORK_DIR }}" in w and "not found" in w for w in warnings), warnings


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_each_pool_template_passes_prefects_base_job_template_check(kind):
    from prefect.server.schemas.actions import WorkPoolCreate, validate_base_job_template
    from prefect.utilities.schema_tools import is_valid_schema

    template = json.loads((TEMPLATES / f"{kind}-pool.json").read_text())
    validate_base_job_template(template)  # every placeholder of the job configuration is a variable
    is_valid_schema(template["variables"], preprocess=False)
    WorkPoolCreate(name=f"crawl2chat-{kind}", type=kind, base_job_template=template)
    broken = copy.deepcopy(template)
    del broken["variables"]["properties"]["gpus" if kind == "kubernetes" else "container_create_kwargs"]
    with pytest.raises(ValueError, match="undeclared variable"):
        validate_base_job_template(broken)


# --- against a server ----------------------------------------------------------------------------

def prefect_cli(server, *args: str, **env: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "prefect", *args], env=server.env(**env), cwd=REPO,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"prefect {' '.join(args)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def deployed(server):
    """The docs' commands: a process pool, then `prefect deploy --all` from the repo root."""
    work = server.log.parent / "work"
    prefect_cli(server, "work-pool", "create", PROCESS_POOL, "--type", "process")
    out = prefect_cli(server, "deploy", "--all", CRAWL2CHAT_WORK_DIR=str(work))
    return work, out


def api(server, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.api_url}{path}", timeout=10, **kwargs)


def test_prefect_deploy_all_creates_every_deployment_on_the_process_pool(server, deployed, served):
    work, _ = deployed
    found = {d["name"]: d for d in api(server, "POST", "/deployments/filter", json={}).json()}
    assert set(found) == set(served)
    for name, d in served.items():
        deployment = found[name]
        flow = api(server, "GET", f"/flows/{deployment['flow_id']}").json()
        assert (flow["name"], deployment["entrypoint"]) == (d.flow_name, d.entrypoint)
        assert deployment["work_pool_name"] == PROCESS_POOL and deployment["tags"] == d.tags
        assert deployment["parameters"] == parameters(name, str(work)), "the run form is the tiny preset's"
        gpu = GPU_JOB_VARIABLES if name in GPU_DEPLOYMENTS else {}
        assert deployment["job_variables"] == {"env": HEARTBEAT_ENV, **gpu}
        assert deployment["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert not deployment["paused"]
        schedules = [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]]
        assert schedules == [(s.schedule.cron, True) for s in d.schedules]
    assert found["data-refresh"]["schedules"], "the weekly data refresh keeps its cron"


def create_pool(server, kind: str) -> dict:
    template = json.loads((TEMPLATES / f"{kind}-pool.json").read_text())
    response = api(server, "POST", "/work_pools/", json={"name": f"crawl2chat-{kind}", "type": kind,
                                                         "base_job_template": template})
    assert response.status_code == 201, response.text
    assert response.json()["base_job_template"] == template
    return response.json()


def test_the_server_refuses_a_pool_template_with_an_undeclared_variable(server):
    template = json.loads((TEMPLATES / "kubernetes-pool.json").read_text())
    del template["variables"]["properties"]["gpus"]
    response = api(server, "POST", "/work_pools/", json={"name": "broken", "type": "kubernetes",
                                                         "base_job_template": template})
    assert response.status_code == 422 and "gpus" in response.text, response.text


def resolve(pool: dict, job_variables: dict) -> dict:
    """The job configuration a worker of the pool builds for a run with these job variables (Prefect's
    own `BaseJobConfiguration.from_template_and_values`, every field kept)."""
    from prefect.workers.base import BaseJobConfiguration
    from pydantic import ConfigDict

    class EveryField(BaseJobConfiguration):
        model_config = ConfigDict(extra="allow")

    config = asyncio.run(EveryField.from_template_and_values(pool["base_job_template"], job_variables))
    return config.model_dump()


def test_on_a_kubernetes_pool_the_train_deployments_runs_ask_for_one_gpu_and_the_others_for_none(server, deployed):
    pool = create_pool(server, "kubernetes")
    train, data = (api(server, "GET", f"/deployments/name/{name}").json() for name in ("train/train", "data/data"))
    # The server takes the train deployment's job variables on this pool (it checks them against the template).
    assert_pool_accepts(server, pool, train)

    container = resolve(pool, train["job_variables"])["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container["env"] == HEARTBEAT_ENV  # the worker turns it into a list of name/value pairs
    container = resolve(pool, data["job_variables"])["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {}, "requests": {}}

    # A pool made with --image runs its jobs in that image unless a deployment says otherwise.
    with_image = {"base_job_template": pool_template("kubernetes", image="registry.example/crawl2chat:1")}
    container = resolve(with_image, data["job_variables"])["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/crawl2chat:1"


def test_on_a_docker_pool_the_train_deployments_containers_get_one_gpu_and_the_others_none(server, deployed):
    from docker.types import HostConfig

    pool = create_pool(server, "docker")
    train, data = (api(server, "GET", f"/deployments/name/{name}").json() for name in ("train/train", "data/data"))
    assert_pool_accepts(server, pool, train)

    kwargs = resolve(pool, train["job_variables"])["container_create_kwargs"]
    # docker-py, which the Docker worker hands these to, makes them `docker run --gpus 1`'s request.
    host_config = HostConfig(version="1.45", **kwargs)
    assert host_config["DeviceRequests"] == [{"Driver": "", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]],
                                              "Options": {}}]
    assert resolve(pool, train["job_variables"])["env"] == HEARTBEAT_ENV
    assert "container_create_kwargs" not in resolve(pool, data["job_variables"])


def assert_pool_accepts(server, pool: dict, deployment: dict) -> None:
    response = api(server, "POST", "/deployments/", json={
        "name": f"train-on-{pool['type']}", "flow_id": deployment["flow_id"], "entrypoint": deployment["entrypoint"],
        "work_pool_name": pool["name"], "job_variables": deployment["job_variables"],
        "parameters": deployment["parameters"]})
    assert response.status_code in (200, 201), response.text
    assert response.json()["job_variables"] == GPU_JOB_VARIABLES | {"env": HEARTBEAT_ENV}
