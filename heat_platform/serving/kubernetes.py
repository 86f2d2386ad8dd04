"""Kubernetes manifest for a bento: a Deployment and a Service, probed on /livez and /readyz.

The image is what ``bentoml containerize <bento>`` builds (it needs a Docker engine, which this
machine does not have, so the manifest names the image the bento would become).
"""

from __future__ import annotations

from pathlib import Path

import yaml

PORT = 3000


def bento_manifests(bento: str, *, namespace: str = "heat-platform", replicas: int = 2,
                    image_registry: str = "registry.local/heat-platform",
                    cpu: str = "1", memory: str = "1Gi", api_key_secret: str | None = None,
                    labels: dict[str, str] | None = None) -> list[dict]:
    name, version = bento.split(":", 1)
    app = name.replace("_", "-")
    selector = {"app.kubernetes.io/name": app}
    meta_labels = {**selector, "app.kubernetes.io/version": version,
                   "app.kubernetes.io/part-of": "heat-platform", **(labels or {})}
    env = [{"name": "HEAT_SERVING_LOG_DIR", "value": "/var/log/heat-serving"},
           # In a container the service would count the node's cores, not the pod's CPU limit.
           {"name": "HEAT_SERVING_WORKERS", "value": str(front_workers(cpu))}]
    if api_key_secret:
        env.append({"name": "HEAT_SERVING_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": api_key_secret, "key": "api-key"}}})
    container = {
        "name": app,
        "image": f"{image_registry}/{name}:{version}",
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": env,
        "resources": {"requests": {"cpu": cpu, "memory": memory},
                      "limits": {"cpu": cpu, "memory": memory}},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 3},
        "volumeMounts": [{"name": "serving-log", "mountPath": "/var/log/heat-serving"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": meta_labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # A new version becomes ready before an old pod goes: the cluster's blue/green.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": meta_labels,
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/path": "/metrics",
                                             "prometheus.io/port": str(PORT)}},
                "spec": {"containers": [container],
                         "volumes": [{"name": "serving-log", "emptyDir": {}}]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": namespace, "labels": meta_labels},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    return [deployment, service]


def front_workers(cpu: str) -> int:
    """One front worker per whole core of a Kubernetes CPU quantity ("2", "1.5", "500m")."""
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, int(cores))


def write_manifests(path: Path, bento: str, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(bento_manifests(bento, **options), sort_keys=False))
    return path
