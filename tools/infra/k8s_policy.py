#!/usr/bin/env python3
"""Policy check of rendered Kubernetes manifests (.ci/infra runs it on every overlay).

What a schema cannot say: every Bourse service has probes, requests and a memory limit, runs
as uid 65532 without root, privilege escalation, capabilities or a writable root filesystem,
mounts no service-account token, has a PodDisruptionBudget, an autoscaling/v2 HPA and its own
NetworkPolicy behind a namespace-wide default deny; every image is pinned (Bourse's by digest);
no Secret or ConfigMap carries a credential.

Usage: k8s_policy.py RENDERED.yaml [...]; exits 1 listing every violation.
"""
import base64
import re
import sys

import yaml

CREDENTIAL_IN_URL = re.compile(r"://[^:/@\s]+:[^@/\s]+@")
SECRET_KEY = re.compile(r"(password|passwd|secret|token|private[_-]?key)", re.IGNORECASE)
BOURSE_UID = 65532


def selects(selector, labels):
    """Whether a label selector (matchLabels / matchExpressions) matches `labels`."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check(documents, source):
    problems = []

    def problem(what, message):
        problems.append(f"{source}: {what}: {message}")

    by_kind = {}
    for doc in documents:
        by_kind.setdefault(doc["kind"], []).append(doc)

    policies = by_kind.get("NetworkPolicy", [])
    if not any(
        p["spec"].get("podSelector") == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
        for p in policies
    ):
        problem("NetworkPolicy", "no default deny (podSelector {}, Ingress and Egress, no rules)")

    workloads = [
        d
        for kind in ("Deployment", "StatefulSet", "Job")
        for d in by_kind.get(kind, [])
    ]
    for workload in workloads:
        kind, name = workload["kind"], workload["metadata"]["name"]
        what = f"{kind}/{name}"
        template = workload["spec"]["template"]
        pod = template["spec"]
        labels = template["metadata"].get("labels", {})
        is_bourse = labels.get("app.kubernetes.io/part-of") == "bourse"
        if pod.get("automountServiceAccountToken") is not False:
            problem(what, "mounts a service-account token (automountServiceAccountToken: false)")
        pod_security = pod.get("securityContext") or {}
        if pod_security.get("runAsNonRoot") is not True:
            problem(what, "runAsNonRoot is not true")
        if is_bourse and pod_security.get("runAsUser") != BOURSE_UID:
            problem(what, f"runs as uid {pod_security.get('runAsUser')}, not {BOURSE_UID}")
        if (pod_security.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(what, "no RuntimeDefault seccomp profile")
        for container in pod["containers"]:
            cwhat = f"{what} container {container['name']}"
            image = container.get("image", "")
            if image.endswith(":latest") or ("@sha256:" not in image and ":" not in image.rsplit("/", 1)[-1]):
                problem(cwhat, f"image {image!r} is not pinned (no tag or digest, or :latest)")
            if is_bourse and not re.search(r"@sha256:[0-9a-f]{64}$", image):
                problem(cwhat, f"Bourse's image {image!r} is not pinned by digest")
            resources = container.get("resources") or {}
            requests = resources.get("requests") or {}
            if "cpu" not in requests or "memory" not in requests:
                problem(cwhat, "no CPU and memory requests")
            if "memory" not in (resources.get("limits") or {}):
                problem(cwhat, "no memory limit")
            security = container.get("securityContext") or {}
            if security.get("allowPrivilegeEscalation") is not False:
                problem(cwhat, "allowPrivilegeEscalation is not false")
            if security.get("readOnlyRootFilesystem") is not True:
                problem(cwhat, "root filesystem is writable")
            if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
                problem(cwhat, "capabilities are not all dropped")
            if kind != "Job":
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe not in container:
                        problem(cwhat, f"no {probe}")

        if kind != "Deployment" or not is_bourse:
            continue
        # A Bourse service: its PDB, HPA, NetworkPolicy and Service.
        if not any(selects(p["spec"].get("selector"), labels) for p in by_kind.get("PodDisruptionBudget", [])):
            problem(what, "no PodDisruptionBudget selects its pods")
        hpas = [
            h
            for h in by_kind.get("HorizontalPodAutoscaler", [])
            if h["spec"]["scaleTargetRef"].get("kind") == "Deployment"
            and h["spec"]["scaleTargetRef"].get("name") == name
        ]
        if not hpas:
            problem(what, "no HorizontalPodAutoscaler scales it")
        for hpa in hpas:
            if hpa["apiVersion"] != "autoscaling/v2":
                problem(what, f"its HPA is {hpa['apiVersion']}, not autoscaling/v2")
        own_policies = [
            p
            for p in policies
            if p["spec"].get("podSelector")
            and selects(p["spec"]["podSelector"], labels)
            and "app.kubernetes.io/name" in (p["spec"]["podSelector"].get("matchLabels") or {})
        ]
        if not any(p["spec"].get("ingress") for p in own_policies):
            problem(what, "no NetworkPolicy of its own says who may call it")
        if not any(selects({"matchLabels": s["spec"].get("selector") or {}}, labels) for s in by_kind.get("Service", [])):
            problem(what, "no Service selects its pods")
        if name == "risk":
            # ADR 0018: risk's checks read one process's memory; two replicas would split it.
            if workload["spec"].get("replicas", 1) != 1:
                problem(what, "risk must run as one replica (ADR 0018)")
            if (workload["spec"].get("strategy") or {}).get("type") != "Recreate":
                problem(what, "risk must be replaced, not rolled: two would run at once (ADR 0018)")
            for hpa in hpas:
                if hpa["spec"].get("maxReplicas") != 1:
                    problem(what, "risk's HPA may scale it beyond one replica (ADR 0018)")
        if name == "orders":
            env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
            if "BOURSE_ORDERS_ADVERTISE_URL" not in env:
                problem(what, "replicas cannot reach each other: no BOURSE_ORDERS_ADVERTISE_URL")

    for doc in documents:
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip") and not re.match(r"^CKV2?_K8S_\d+=\S.{9,}", str(value)):
                problem(f"{doc['kind']}/{doc['metadata']['name']}", f"{key} skips a check without its reason")

    # Every Secret a pod mounts is made by this rendering: a Secret, an ExternalSecret's
    # target (with a store that exists) or a Certificate's secret — a typo here is a pod that
    # never starts.
    stores = {d["metadata"]["name"] for d in by_kind.get("SecretStore", [])}
    made = {d["metadata"]["name"] for d in by_kind.get("Secret", [])}
    for external in by_kind.get("ExternalSecret", []):
        spec = external["spec"]
        made.add((spec.get("target") or {}).get("name", external["metadata"]["name"]))
        if spec.get("secretStoreRef", {}).get("name") not in stores:
            problem(f"ExternalSecret/{external['metadata']['name']}", "its SecretStore is not in the rendering")
        for item in spec.get("data") or []:
            if not item.get("remoteRef", {}).get("key") or item["remoteRef"]["key"].startswith("REPLACED-BY-OVERLAY"):
                problem(f"ExternalSecret/{external['metadata']['name']}", f"{item.get('secretKey')} has no remote key")
    made |= {d["spec"]["secretName"] for d in by_kind.get("Certificate", [])}
    for workload in workloads:
        what = f"{workload['kind']}/{workload['metadata']['name']}"
        for volume in workload["spec"]["template"]["spec"].get("volumes") or []:
            names = [(volume.get("secret") or {}).get("secretName")]
            names += [(source.get("secret") or {}).get("name") for source in (volume.get("projected") or {}).get("sources", [])]
            for name in filter(None, names):
                if name not in made:
                    problem(what, f"mounts Secret {name}, which nothing in the rendering makes")

    for doc in by_kind.get("Secret", []) + by_kind.get("ConfigMap", []):
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        for field in ("data", "stringData"):
            for key, value in (doc.get(field) or {}).items():
                text = str(value)
                if doc["kind"] == "Secret" and field == "data":
                    text = base64.b64decode(text).decode("utf-8", "replace")
                if CREDENTIAL_IN_URL.search(text):
                    problem(what, f"{key} holds a credential in a URL")
                elif doc["kind"] == "Secret" and SECRET_KEY.search(key) and text:
                    problem(what, f"{key} holds a secret value")
    return problems


def main(paths):
    problems = []
    for path in paths:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        problems += check(documents, path)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} policy violation(s)")
        return 1
    print(f"policy: {len(paths)} rendering(s) clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
