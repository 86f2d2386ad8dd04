"""Kubernetes manifest for a bento: a Deployment and a Service, probed on /livez and /readyz.

The image is the bento's: ``deploy/docker/bento.Dockerfile`` built on the exported bento (or
``bentoml containerize <bento>`` where a Docker engine is at hand); this machine has neither, so
the manifest names the image the bento would become. What the cluster must provide (README,
Scaling out): the platform home's volume claim, where the pods write the serving log that drift
monitoring reads (``<home>/serving/log``), and the Secret holding the API key.
"""

from __future__ import annotations

from pathlib import Path

import yaml

PORT = 3000
# The platform home's ReadWriteMany claim (deploy/k8s/storage.yaml) and, on it, the serving log
# drift monitoring reads (heat_platform.assets.monitoring: <home>/serving/log).
HOME_CLAIM = "heat-platform-home"
SERVING_LOG_SUBPATH = "serving/log"
SERVING_LOG_MOUNT = "/var/log/heat-serving"
API_KEY_SECRET = "heat-serving-api-key"
API_KEY_SECRET_KEY = "api-key"
# The bento image's unprivileged user (deploy/docker/bento.Dockerfile).
RUN_AS = 10001


def bento_manifests(bento: str, *, namespace: str = "heat-platform", replicas: int = 2,
                    image_registry: str = "registry.local/heat-platform",
                    cpu: str = "1", memory: str = "1Gi",
                    api_key_secret: str | None = API_KEY_SECRET,
                    home_claim: str = HOME_CLAIM,
                    labels: dict[str, str] | None = None) -> list[dict]:
    """The Deployment and Service of ``bento`` (``name:version``). The API key comes from the
    Secret ``api_key_secret`` (key ``api-key``; None: no key, every endpoint open), the serving
    log goes to the platform home's volume claim ``home_claim``."""
    name, version = bento.split(":", 1)
    app = name.replace("_", "-")
    selector = {"app.kubernetes.io/name": app}
    meta_labels = {**selector, "app.kubernetes.io/version": version,
                   "app.kubernetes.io/part-of": "heat-platform", **(labels or {})}
    env = [{"name": "HEAT_SERVING_LOG_DIR", "value": SERVING_LOG_MOUNT},
           # In a container the service would count the node's cores, not the pod's CPU limit.
           {"name": "HEAT_SERVING_WORKERS", "value": str(front_workers(cpu))}]
    if api_key_secret:
        env.append({"name": "HEAT_SERVING_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": api_key_secret,
                                                   "key": API_KEY_SECRET_KEY}}})
    container = {
        "name": app,
        "image": f"{image_registry}/{name}:{version}",
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": env,
        "resources": {"requests": {"cpu": cpu, "memory": memory},
                      "limits": {"cpu": cpu, "memory": memory}},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": "http"},
                          "initialDelaySeconds": 10, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 3},
        # Nothing but the mounts below is writable: BentoML falls back to /tmp for its
        # Prometheus and socket directories when its home is read-only.
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "platform-home", "mountPath": SERVING_LOG_MOUNT,
             "subPath": SERVING_LOG_SUBPATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_security = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                    "fsGroup": RUN_AS, "seccompProfile": {"type": "RuntimeDefault"}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": namespace, "labels": {**meta_labels}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {**selector}},
            # A new version becomes ready before an old pod goes: the cluster's blue/green.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {**meta_labels},
                             "annotations": {"prometheus.io/scrape": "true",
                                             "prometheus.io/path": "/metrics",
                                             "prometheus.io/port": str(PORT)}},
                "spec": {"automountServiceAccountToken": False,
                         "securityContext": pod_security,
                         "containers": [container],
                         "volumes": [
                             {"name": "platform-home",
                              "persistentVolumeClaim": {"claimName": home_claim}},
                             {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                         ]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": namespace, "labels": {**meta_labels}},
        "spec": {"selector": {**selector}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    # (copies, not shared dicts, so the YAML has no anchors and aliases)
    return [deployment, service]


def front_workers(cpu: str) -> int:
    """One front worker per whole core of a Kubernetes CPU quantity ("2", "1.5", "500m")."""
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, int(cores))


def write_manifests(path: Path, bento: str, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(bento_manifests(bento, **options), sort_keys=False))
    return path
