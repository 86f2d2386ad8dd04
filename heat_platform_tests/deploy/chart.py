"""What the official Dagster Helm chart makes of deploy/helm/dagster-values.yaml, for the parts
the platform relies on, without Helm or a cluster.

The chart's own values.schema.json cannot ship in this repository, so two things stand in:

* :data:`CHART_KEYS`: the keys the chart (1.13) accepts in each section the values set, read
  from its values schema; sections the schema closes (``additionalProperties: false``) refuse
  anything else there, so a misspelt key would be ignored or refused by Helm;
* the instance config and container context the chart's templates render from those values
  (:func:`instance_config`, :func:`code_location_context`), which the tests then hand to Dagster
  and dagster-k8s themselves: their config schemas validate them, and the objects are built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from heat_platform.paths import PROJECT_ROOT

VALUES = PROJECT_ROOT / "deploy" / "helm" / "dagster-values.yaml"

_K8S_FIELDS = {"env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity",
               "tolerations", "podSecurityContext", "securityContext", "resources",
               "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts",
               "volumes", "schedulerName", "deploymentLabels"}
CHART_KEYS: dict[str, set[str]] = {
    "": {"dagsterWebserver", "dagster-user-deployments", "postgresql",
         "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
         "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
         "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
         "global", "retention", "concurrency", "additionalInstanceConfig", "nameOverride",
         "fullnameOverride", "rbacEnabled"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName",
               "celeryConfigSecretName"},
    "dagsterWebserver": {"replicaCount", "image", "nameOverride", "pathPrefix", "service",
                         "workspace", "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle",
                         "logLevel", *_K8S_FIELDS},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {"name", "image", "dagsterApiGrpcArgs",
                                               "codeServerArgs", "includeConfigInLaunchedRuns",
                                               "port", *_K8S_FIELDS},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {"image", "imagePullPolicy", "jobNamespace",
                                          "loadInclusterConfig", "kubeconfigFile",
                                          "envConfigMaps", "envSecrets", "envVars",
                                          "volumeMounts", "volumes", "labels",
                                          "failPodOnRunFailure", "resources", "schedulerName",
                                          "securityContext", "runK8sConfig"},
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {"containerConfig", "podSpecConfig",
                                                       "podTemplateSpecMetadata",
                                                       "jobSpecConfig", "jobMetadata"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service"},
    "dagsterDaemon": {"enabled", "image", "runCoordinator", "heartbeatTolerance", "runMonitoring",
                      "runRetries", "sensors", "schedules", *_K8S_FIELDS},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
        "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    "dagsterDaemon.sensors": {"useThreads", "numWorkers", "numSubmitWorkers"},
    "dagsterDaemon.schedules": {"useThreads", "numWorkers", "numSubmitWorkers"},
    "computeLogManager": {"type", "config"},
    "computeLogManager.config": {"azureBlobComputeLogManager", "gcsComputeLogManager",
                                 "s3ComputeLogManager", "customComputeLogManager"},
    "computeLogManager.config.customComputeLogManager": {"module", "class", "config"},
    "concurrency": {"enabled", "pools", "runs"},
    "concurrency.pools": {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    "concurrency.runs": {"maxConcurrentRuns", "tagConcurrencyLimits"},
    "telemetry": {"enabled"},
}
ENUMS = {"runLauncher.type": {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"},
         "dagsterDaemon.runCoordinator.type": {"QueuedRunCoordinator", "CustomRunCoordinator"},
         "computeLogManager.type": {"NoOpComputeLogManager", "AzureBlobComputeLogManager",
                                    "GCSComputeLogManager", "S3ComputeLogManager",
                                    "CustomComputeLogManager"}}


def load_values(path: Path = VALUES) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def unknown_keys(values: dict[str, Any]) -> list[str]:
    """Keys of ``values`` in a section of :data:`CHART_KEYS` that the chart does not know."""
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, f"{path}[]")
        if not isinstance(node, dict):
            return
        if path in CHART_KEYS:
            found.extend(f"{path}.{key}".lstrip(".") for key in node
                         if key not in CHART_KEYS[path])
            for key, value in node.items():
                walk(value, f"{path}.{key}".lstrip("."))

    walk(values, "")
    for path, allowed in ENUMS.items():
        value: Any = values
        for part in path.split("."):
            value = value.get(part, {}) if isinstance(value, dict) else {}
        if value and value not in allowed:
            found.append(f"{path}={value}")
    return found


def run_launcher_config(values: dict[str, Any], *, kubeconfig: Path | None = None,
                        namespace: str = "heat-platform") -> dict[str, Any]:
    """The K8sRunLauncher's config the chart renders into the instance (dagster.yaml). With a
    ``kubeconfig``, it is loaded from that file instead of the cluster (outside a pod)."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s = {_snake(key): value for key, value in launcher.get("runK8sConfig", {}).items()}
    config = {
        "instance_config_map": "dagster-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        "dagster_home": "/opt/dagster/dagster_home",
        "service_account_name": "dagster",
        "job_namespace": launcher.get("jobNamespace") or namespace,
        "image_pull_policy": launcher["imagePullPolicy"],
        "load_incluster_config": launcher["loadInclusterConfig"] and kubeconfig is None,
        "env_config_maps": ["dagster-pipeline-env", *launcher["envConfigMaps"]],
        "env_secrets": list(launcher["envSecrets"]),
        "env_vars": list(launcher["envVars"]),
        "volume_mounts": list(launcher["volumeMounts"]),
        "volumes": list(launcher["volumes"]),
        "fail_pod_on_run_failure": launcher.get("failPodOnRunFailure", False),
        "run_k8s_config": run_k8s,
    }
    if kubeconfig is not None:
        config["kubeconfig_file"] = str(kubeconfig)
    return config


def instance_config(values: dict[str, Any], *, postgres: dict[str, Any],
                    kubeconfig: Path | None = None) -> dict[str, Any]:
    """The dagster.yaml the chart writes into its instance ConfigMap. ``postgres`` replaces the
    connection (hostname, port, username, password, db_name) to reach a test server."""
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    logs = values["computeLogManager"]["config"]["customComputeLogManager"]
    storage = {"postgres_db": {**postgres, "params": values["postgresql"]["postgresqlParams"],
                               "scheme": values["postgresql"]["postgresqlScheme"]}}
    concurrency = values["concurrency"]
    return {
        "scheduler": {"module": "dagster.core.scheduler", "class": "DagsterDaemonScheduler"},
        "storage": {"postgres": storage},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher",
                         "config": run_launcher_config(values, kubeconfig=kubeconfig)},
        "run_coordinator": {"module": "dagster.core.run_coordinator",
                            "class": "QueuedRunCoordinator",
                            **({"config": _snake_keys(queued)} if queued else {})},
        "compute_logs": {"module": logs["module"], "class": logs["class"],
                         "config": logs["config"]},
        "run_monitoring": {"enabled": daemon["runMonitoring"]["enabled"],
                           "start_timeout_seconds": daemon["runMonitoring"]["startTimeoutSeconds"],
                           "poll_interval_seconds": daemon["runMonitoring"]["pollIntervalSeconds"]},
        "sensors": _snake_keys(daemon["sensors"]),
        "schedules": _snake_keys(daemon["schedules"]),
        "concurrency": {"pools": _snake_keys(concurrency["pools"]),
                        "runs": _snake_keys(concurrency["runs"])},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def code_location_context(values: dict[str, Any]) -> dict[str, Any]:
    """The container context the chart gives the user deployment's runs
    (``includeConfigInLaunchedRuns``: DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT)."""
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    return {"k8s": {
        "env": deployment.get("env", []),
        "env_secrets": [secret["name"] for secret in deployment.get("envSecrets", [])],
        "volumes": deployment.get("volumes", []),
        "volume_mounts": deployment.get("volumeMounts", []),
        "resources": deployment.get("resources", {}),
        "security_context": deployment.get("securityContext", {}),
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "namespace": "heat-platform",
    }}


def user_code_image(values: dict[str, Any]) -> str:
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _snake_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    return {_snake(key): value for key, value in mapping.items()}
