"""Every Helm release of every test stack as the real chart renders it, and the checks that
need the rendered objects (tests/test_chart_renders.py runs them).

It owns: `helm template` of the pinned chart sources (../shared/reference/charts) with
exactly the inputs a stack registers for a `kubernetes:helm.sh/v3:Release` (chart, version,
release name, namespace, values), at the stack's Kubernetes version and with the API
versions the stack's cluster serves; a cache of those renders for the session; and pure
functions that judge the rendered objects (scheduling, selection, discovery, feature gates,
images, value keys). It must not change or copy the reference data, run `helm dependency
build`, or learn a stack's settings other than from what the program registered.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

from components import catalog
from components.config import StackConfig
from tests.support.config_grid import GRID, rendered
from tests.conftest import rendered_stack
from tests.support.external_tools import chart_dir, tool
from tests.support import parse, raw_stack
from tests.support import conformance
from tests.support.scheduling import LABEL_SELECTOR_OPERATORS, Taint, can_land, requirement_holds, untolerated
from tools.lib.mock_engine import Registered, Rendering

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ASG_TAG = "aws:autoscaling/tag:Tag"
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
CONFIG_FILE = "kubernetes:yaml/v2:ConfigFile"

Manifest = dict[str, Any]
ValuePath = tuple[str | int, ...]

# Every stack the tests know: the repo's stack files and the generated grid.
STACKS: tuple[str, ...] = ("dev", "prod", *(f"grid-{name}" for name in GRID))
REPO_STACKS = ("dev", "prod")

WORKERS = max(2, os.cpu_count() or 2)


def stack(name: str) -> Rendering:
    """The stack `name` rendered under the mock engine (once per session)."""
    if name in REPO_STACKS:
        return rendered_stack(name)
    return rendered(name.removeprefix("grid-"))


def stack_config(name: str) -> StackConfig:
    """The validated config of stack `name`, as the program parses it."""
    raw = raw_stack(name) if name in REPO_STACKS else copy.deepcopy(GRID[name.removeprefix("grid-")])
    return parse(raw, stack=name)


# --- what the cluster serves: the API versions Helm's Capabilities must report ---------------

# `helm template` has no cluster to ask, so .Capabilities.APIVersions is Helm's offline default
# set (pkg/chart/common/capabilities.go, DefaultVersionSet: the groups of client-go's scheme)
# plus --api-versions. That set lacks kube-aggregator's group, which every kube-apiserver
# serves: without it prometheus-adapter 5.3.0 renders its APIServices as
# apiregistration.k8s.io/v1beta1 (templates/*-apiservice.yaml), removed in Kubernetes 1.22.
BUILT_IN_OUTSIDE_HELM_DEFAULTS: dict[str, tuple[str, ...]] = {
    "apiregistration.k8s.io/v1": ("APIService",),
}

# Gateway API's standard-install.yaml is every config/crd/standard/gateway*.yaml of the tag
# (hack/build-install-yaml.sh); the kinds and served versions of v1.6.1's files.
GATEWAY_API_STANDARD_INSTALL: dict[str, dict[str, tuple[str, ...]]] = {
    "v1.6.1": {
        "gateway.networking.k8s.io/v1": (
            "BackendTLSPolicy", "GRPCRoute", "Gateway", "GatewayClass", "HTTPRoute", "ListenerSet",
            "ReferenceGrant", "TCPRoute", "TLSRoute", "UDPRoute",
        ),
        "gateway.networking.k8s.io/v1beta1": ("Gateway", "GatewayClass", "HTTPRoute", "ReferenceGrant"),
    },
}

# Cluster-scoped built-in kinds (everything else built in is namespaced); custom kinds take
# their scope from their CRD.
CLUSTER_SCOPED_BUILT_INS = frozenset(
    {
        "APIService", "CSIDriver", "CertificateSigningRequest", "ClusterRole", "ClusterRoleBinding",
        "CustomResourceDefinition", "IngressClass", "MutatingWebhookConfiguration", "Namespace", "Node",
        "PersistentVolume", "PodSecurityPolicy", "PriorityClass", "RuntimeClass", "StorageClass",
        "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    }
)


@dataclass(frozen=True)
class Release:
    """What the program asks Helm to install, as it registered it, plus what Helm learns from
    the cluster: its Kubernetes version and the API versions it serves."""

    chart: str
    version: str
    name: str
    namespace: str
    values_json: str
    kube_version: str
    api_versions: tuple[str, ...] = ()

    @property
    def values(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.values_json)
        return loaded

    def with_values(self, values: Mapping[str, Any]) -> Release:
        return replace(self, values_json=json.dumps(values, sort_keys=True))

    def label(self) -> str:
        return f"{self.chart} {self.version} ({self.namespace}/{self.name})"


def release_of(registered: Registered, kube_version: str) -> Release:
    i = registered.inputs
    return Release(
        chart=i["chart"],
        version=i["version"],
        name=i["name"],
        namespace=i["namespace"],
        values_json=json.dumps(i.get("values") or {}, sort_keys=True),
        kube_version=kube_version,
    )


# --- helm template ----------------------------------------------------------------------------

# Helm's own cache and config for these runs, so that none lands in the user's home.
_HELM_HOME = tempfile.mkdtemp(prefix="chart-renders-helm-")
atexit.register(shutil.rmtree, _HELM_HOME, True)
_lock = threading.Lock()
_texts: dict[tuple[Release, bool, bool], subprocess.CompletedProcess[str]] = {}
_renders: dict[Release, ChartRender] = {}
_parsed: dict[str, Any] = {}
# How many helm processes ran, and for how long in total (seconds): printed by the tests.
HELM_RUNS: dict[str, float] = {"count": 0, "seconds": 0.0}


class _Loader(yaml.CSafeLoader):
    """YAML as Helm's Go decoder reads it: a bare `=` is a string (the prometheus-operator
    CRDs list `=` in an enum), not PyYAML's YAML 1.1 `value` tag."""


def _plain_string(loader: _Loader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:value", _plain_string)


def helm_text(
    release: Release, *, include_crds: bool = True, skip_schema: bool = False, cached: bool = True
) -> subprocess.CompletedProcess[str]:
    """`helm template` of `release` (cached unless told): its exit status, manifests, errors.

    Values go in on stdin (`--values -`). Test hooks are left out (`helm install` creates them
    only for `helm test`); other hooks stay, as Helm applies them on install. `skip_schema`
    turns off the chart's values.schema.json, so a changed value is judged by the templates.
    """
    key = (release, include_crds, skip_schema)
    with _lock:
        if cached and key in _texts:
            return _texts[key]
    command = [
        str(tool("helm")), "template", release.name, str(chart_dir(release.chart, release.version)),
        "--namespace", release.namespace, "--kube-version", release.kube_version,
        "--values", "-", "--skip-tests",
    ]
    if include_crds:
        command.append("--include-crds")
    if skip_schema:
        command.append("--skip-schema-validation")
    if release.api_versions:
        command += ["--api-versions", ",".join(release.api_versions)]
    env = {
        **os.environ,
        "HELM_CACHE_HOME": f"{_HELM_HOME}/cache",
        "HELM_CONFIG_HOME": f"{_HELM_HOME}/config",
        "HELM_DATA_HOME": f"{_HELM_HOME}/data",
    }
    started = time.perf_counter()
    done = subprocess.run(command, input=release.values_json, capture_output=True, text=True, timeout=300, env=env)
    with _lock:
        HELM_RUNS["count"] += 1
        HELM_RUNS["seconds"] += time.perf_counter() - started
        if cached:
            _texts[key] = done
    return done


_DOCUMENT = re.compile(r"^---[ \t]*$", re.M)
_SOURCE = re.compile(r"^# Source: (.+)$", re.M)


def documents(text: str) -> list[tuple[str, Any]]:
    """The documents of a helm template output as (template path, object); each distinct
    document text is parsed once per session (the CRDs recur in every render)."""
    found = []
    for chunk in _DOCUMENT.split(text):
        if not chunk.strip():
            continue
        source = _SOURCE.search(chunk)
        with _lock:
            known = chunk in _parsed
            doc = _parsed.get(chunk)
        if not known:
            doc = yaml.load(chunk, Loader=_Loader)
            with _lock:
                _parsed[chunk] = doc
        if doc:
            found.append((source.group(1) if source else "", doc))
    return found


@dataclass(frozen=True)
class Rendered:
    """One object a chart renders, and the template it came from."""

    source: str
    manifest: Manifest

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind"))

    @property
    def name(self) -> str:
        return str((self.manifest.get("metadata") or {}).get("name"))

    @property
    def subchart(self) -> str:
        """The chart that owns the template: a dependency's name, or the chart itself."""
        parts = self.source.split("/")
        return parts[2] if len(parts) > 3 and parts[1] == "charts" else parts[0]


@dataclass
class ChartRender:
    release: Release
    # Every object Helm applies, CRDs apart (a v1 List is applied as its items).
    rendered: list[Rendered]
    crds: list[Manifest]

    @property
    def objects(self) -> list[Manifest]:
        return [r.manifest for r in self.rendered]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [m for m in self.objects if m.get("kind") == kind]


def render(release: Release) -> ChartRender:
    """`release` as Helm renders it (cached); a failed render fails the test with helm's error."""
    with _lock:
        if release in _renders:
            return _renders[release]
    done = helm_text(release)
    assert done.returncode == 0, f"helm template {release.label()} failed:\n{done.stderr}"
    items: list[Rendered] = []
    crds: list[Manifest] = []
    for source, doc in documents(done.stdout):
        for obj in doc.get("items") or [] if doc.get("kind") == "List" else [doc]:
            if obj.get("kind") == "CustomResourceDefinition":
                crds.append(obj)
            else:
                items.append(Rendered(source, obj))
    result = ChartRender(release, items, crds)
    with _lock:
        _renders[release] = result
    return result


def render_all(releases: Iterable[Release]) -> list[ChartRender]:
    """Several renders, side by side (each is a helm process)."""
    todo = list(releases)
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(render, todo))


# --- a stack's releases, rendered as Helm would on its cluster --------------------------------


@dataclass
class StackRelease:
    registered: Registered
    release: Release
    render: ChartRender


@dataclass
class StackCharts:
    name: str
    rendering: Rendering
    kube_version: str
    releases: list[StackRelease]
    # group/version -> kinds the cluster serves that Helm's offline defaults may lack.
    served: dict[str, set[str]]
    # What --api-versions says for those (charts that consult them are rendered with it).
    api_versions: tuple[str, ...]
    # (group, kind) -> "Namespaced" / "Cluster", for the kinds of the CRDs installed.
    crd_scopes: dict[tuple[str, str], str] = field(default_factory=dict)
    crd_schemas: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def release(self, chart: str) -> StackRelease | None:
        found = [r for r in self.releases if r.release.chart == chart]
        assert len(found) <= 1, f"{self.name}: {len(found)} releases of {chart}"
        return found[0] if found else None

    def namespace_of(self, manifest: Manifest, release: Release) -> str | None:
        """Where Helm puts the object: its own namespace, else the release's if it is namespaced."""
        meta = manifest.get("metadata") or {}
        if meta.get("namespace"):
            return str(meta["namespace"])
        kind = str(manifest.get("kind"))
        group = str(manifest.get("apiVersion", "")).rpartition("/")[0]
        scope = self.crd_scopes.get((group, kind))
        if scope is not None:
            return release.namespace if scope == "Namespaced" else None
        return None if kind in CLUSTER_SCOPED_BUILT_INS else release.namespace


def served_versions(crd: Manifest) -> Iterator[tuple[str, str]]:
    for version in crd["spec"]["versions"]:
        if version.get("served", True):
            yield f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"]


def api_versions_flag(served: Mapping[str, set[str]]) -> tuple[str, ...]:
    """--api-versions as Helm builds Capabilities from discovery: each group/version and
    each group/version/Kind (pkg/action/action.go, GetVersionSet)."""
    out: set[str] = set()
    for group_version, kinds in served.items():
        out.add(group_version)
        out.update(f"{group_version}/{kind}" for kind in kinds)
    return tuple(sorted(out))


def _crd_identity(renders: Iterable[ChartRender]) -> set[tuple[str, str]]:
    return {pair for r in renders for crd in r.crds for pair in served_versions(crd)}


@functools.cache
def chart_traits(chart: str, version: str) -> tuple[bool, bool]:
    """(installs CRDs, consults .Capabilities.APIVersions) for the chart and its dependencies,
    read from their files (packed dependencies included): which renders a stack needs."""
    installs = consults = False
    for path in chart_dir(chart, version).rglob("*"):
        if path.suffix == ".tgz":
            with tarfile.open(path) as packed:
                for member in packed.getmembers():
                    data = packed.extractfile(member) if member.isfile() else None
                    text = data.read().decode(errors="replace") if data else ""
                    installs |= "/crds/" in member.name or "kind: CustomResourceDefinition" in text
                    consults |= "Capabilities.APIVersions" in text
        elif path.is_file() and path.suffix in (".yaml", ".yml", ".tpl", ".txt", ".json"):
            text = path.read_text(errors="replace")
            installs |= "crds" in path.parts or "kind: CustomResourceDefinition" in text
            consults |= "Capabilities.APIVersions" in text
    return installs, consults


@functools.cache
def stack_charts(name: str) -> StackCharts:
    """Every release of stack `name` (one of STACKS), rendered: see rendering_charts."""
    return rendering_charts(name, stack(name))


_charts_of_renderings: dict[str, StackCharts] = {}


def rendering_charts(name: str, r: Rendering) -> StackCharts:
    """Every release of the rendering `r` of stack `name` (once per name), rendered with the API versions its cluster serves:
    the CRDs its charts install (their `crds/` and CRD templates), the Gateway API CRDs it
    applies, the custom kinds it creates itself (which an existing cluster must serve for
    the stack to deploy), and the built-in groups Helm's offline set lacks.

    A chart that never consults .Capabilities.APIVersions renders the same whatever the
    cluster serves, so it is rendered once; one that installs CRDs and consults them is
    rendered twice (CRDs first), and its CRDs must come out the same both times."""
    if name in _charts_of_renderings:
        return _charts_of_renderings[name]
    kube_version = str(r.outputs["kubernetes_version"])
    registered = r.of_type(HELM_RELEASE)
    bare = [release_of(x, kube_version) for x in registered]
    traits = {b: chart_traits(b.chart, b.version) for b in bare}
    # Whatever does not consult the API versions renders in the first round, final at once.
    round_one = [b for b in bare if traits[b][0] or not traits[b][1]]
    first = dict(zip(round_one, render_all(round_one)))
    served: dict[str, set[str]] = {gv: set(kinds) for gv, kinds in BUILT_IN_OUTSIDE_HELM_DEFAULTS.items()}
    for group_version, kind in _crd_identity(first.values()):
        served.setdefault(group_version, set()).add(kind)
    for config_file in r.of_type(CONFIG_FILE):
        if config_file.inputs.get("file") == catalog.GATEWAY_API_CRDS_URL:
            assert catalog.GATEWAY_API_VERSION in GATEWAY_API_STANDARD_INSTALL, (
                f"Gateway API {catalog.GATEWAY_API_VERSION}: list its standard-install kinds here"
            )
            for group_version, kinds in GATEWAY_API_STANDARD_INSTALL[catalog.GATEWAY_API_VERSION].items():
                served.setdefault(group_version, set()).update(kinds)
    # Discovery lists every kind the server serves, built-in ones too (harmless to repeat).
    for manifest in r.k8s_objects():
        served.setdefault(str(manifest["apiVersion"]), set()).add(str(manifest["kind"]))
    flag = api_versions_flag(served)
    consulting = [replace(b, api_versions=flag) for b in bare if traits[b][1]]
    second = dict(zip((c for c in bare if traits[c][1]), render_all(consulting)))
    final = [second.get(b) or first[b] for b in bare]
    for b in bare:
        # The CRDs a chart installs must not depend on what the cluster serves; if they did,
        # the API versions above would have to be found by iterating.
        if b in first and b in second:
            assert _crd_identity([first[b]]) == _crd_identity([second[b]]), f"{name}: {b.label()} CRDs depend on Capabilities"
    charts = StackCharts(
        name, r, kube_version, [StackRelease(x, f.release, f) for x, f in zip(registered, final)], served, flag
    )
    for f in final:
        for crd in f.crds:
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            charts.crd_scopes[(group, kind)] = crd["spec"]["scope"]
            for version in crd["spec"]["versions"]:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    charts.crd_schemas[(f"{group}/{version['name']}", kind)] = schema
    _charts_of_renderings[name] = charts
    return charts


# --- conformance ------------------------------------------------------------------------------


def kubeconform_schema(openapi: Mapping[str, Any]) -> dict[str, Any]:
    """A CRD version's openAPIV3Schema as strict JSON Schema, converted the way the schemas in
    ../shared/reference/crds-pinned were (kubeconform's openapi2jsonschema.py):
    `additionalProperties: false` on every non-root object with `properties`, and
    `format: int-or-string` as oneOf string / integer."""

    def convert(node: Any, root: bool) -> Any:
        if isinstance(node, list):
            return [convert(x, False) for x in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v, False) for k, v in node.items()}
        if "properties" in out and not root and "additionalProperties" not in out:
            out["additionalProperties"] = False
        if out.get("format") == "int-or-string":
            out = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
        return out

    converted: dict[str, Any] = convert(copy.deepcopy(dict(openapi)), True)
    return converted


_validated: dict[str, list[str]] = {}
# kubernetes_validate reads and decodes its schema files (the 5 MB _definitions.json among
# them) for every object; the files do not change, so the checks here read each once.
_schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


@contextlib.contextmanager
def _schemas_read_once() -> Iterator[None]:
    original = kubernetes_validate.utils.schema_contents
    kubernetes_validate.utils.schema_contents = _schema_contents
    try:
        yield
    finally:
        kubernetes_validate.utils.schema_contents = original


def conformance_problems(charts: StackCharts) -> list[str]:
    """Every rendered object (CRDs included) strictly valid for the stack's Kubernetes version;
    custom resources against ../shared/reference/crds-pinned, or, for a kind the reference
    does not hold, against the CRD the stack installs for it (the pinned chart's own)."""
    problems = []
    for sr in charts.releases:
        for manifest in [*sr.render.objects, *sr.render.crds]:
            key = hashlib.sha256(
                json.dumps([manifest, charts.kube_version], sort_keys=True, default=str).encode()
            ).hexdigest()
            with _lock:
                cached = _validated.get(key)
            if cached is None:
                with _schemas_read_once():
                    cached = _validate(manifest, charts)
                with _lock:
                    _validated[key] = cached
            problems += [f"{sr.release.chart}: {p}" for p in cached]
    return problems


def unserved_kind_problems(charts: StackCharts) -> list[str]:
    """Kinds a chart renders that the stack's cluster does not serve (neither built into its
    Kubernetes version nor from a CRD the stack installs): Helm's install would stop at them
    ("no matches for kind"), e.g. a ServiceMonitor where no Prometheus Operator runs."""
    problems = []
    with _schemas_read_once():
        for sr in charts.releases:
            for manifest in sr.render.objects:
                api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
                if kind in charts.served.get(api_version, set()):
                    continue
                try:
                    kubernetes_validate.validate(
                        {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}, charts.kube_version
                    )
                except kubernetes_validate.SchemaNotFoundError:
                    problems.append(f"{sr.release.chart}: {api_version} {kind} is not served on this cluster")
                except kubernetes_validate.ValidationError:
                    pass  # built in: the stub is merely incomplete
    return problems


def _validate(manifest: Manifest, charts: StackCharts) -> list[str]:
    api_version, kind = str(manifest.get("apiVersion")), str(manifest.get("kind"))
    installed = charts.crd_schemas.get((api_version, kind))
    if installed is not None and conformance.crd_schema(api_version, kind) is None:
        validator = jsonschema.Draft7Validator(kubeconform_schema(installed))
        return [
            f"{conformance.object_id(manifest)}: {err.message} at '{'/'.join(str(p) for p in err.absolute_path)}'"
            for err in validator.iter_errors(manifest)
        ]
    return conformance.validate_object(manifest, charts.kube_version)


# --- scheduling: where a pod can land (the rules: tests/support/scheduling.py) ----------------

# EKS AMI types -> the node's kubernetes.io/arch.
_ARCH = {"ARM_64": "arm64", "x86_64": "amd64"}


@dataclass(frozen=True)
class NodeGroup:
    """The nodes of one EKS managed node group: labels and taints as the kubelet registers them."""

    name: str
    ami_type: str
    labels: Mapping[str, str]
    taints: tuple[Taint, ...]
    asg_name: str
    cluster: str

    @property
    def gpu(self) -> bool:
        return self.labels.get("nvidia.com/gpu.present") == "true"

    @property
    def bottlerocket(self) -> bool:
        return self.ami_type.startswith("BOTTLEROCKET")

    @property
    def auto_mode(self) -> bool:
        """An EKS Auto Mode node: AWS's AMI, with its own NVIDIA device plugin and no DCGM."""
        return self.ami_type == AUTO_MODE_AMI


def node_groups(r: Rendering) -> list[NodeGroup]:
    """The stack's node groups. Labels: the group's own, and those EKS and the kubelet add to
    every managed node (EKS user guide, "Managed node groups": eks.amazonaws.com/nodegroup,
    eks.amazonaws.com/capacityType; kubelet well-known labels: kubernetes.io/os, arch,
    node.kubernetes.io/instance-type)."""
    groups = []
    for res in r.of_type(NODE_GROUP):
        i, out = res.inputs, res.outputs
        ami = str(i.get("amiType", "AL2023_x86_64_STANDARD"))
        arch = next((a for token, a in _ARCH.items() if token in ami), "amd64")
        name = str(out.get("nodeGroupName") or res.name)
        labels = {
            **(i.get("labels") or {}),
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "node.kubernetes.io/instance-type": str((i.get("instanceTypes") or ["unknown"])[0]),
            "eks.amazonaws.com/nodegroup": name,
            "eks.amazonaws.com/capacityType": str(i.get("capacityType") or "ON_DEMAND"),
        }
        taints = tuple(Taint.from_eks(t) for t in i.get("taints") or [])
        asgs = [g["name"] for block in out.get("resources") or [] for g in block.get("autoscalingGroups") or []]
        groups.append(NodeGroup(name, ami, labels, taints, asgs[0] if asgs else "", str(i.get("clusterName"))))
    return groups


# Karpenter's AMI aliases by family -> the EKS AMI type a managed node group would name.
_ALIAS_AMI_TYPES = {"al2023": "AL2023_x86_64_NVIDIA", "bottlerocket": "BOTTLEROCKET_x86_64_NVIDIA"}
# What stands for the AMI of an EKS Auto Mode node (AWS picks it; there is no AMI type).
AUTO_MODE_AMI = "auto-mode"
# A NodePool whose nodeClassRef names this group is Auto Mode's, and Auto Mode labels each of
# its nodes eks.amazonaws.com/compute-type=auto (EKS user guide, latest/ug/automode/
# create-node-pool.adoc, supported labels).
AUTO_MODE_NODE_CLASS_GROUP = "eks.amazonaws.com"
AUTO_MODE_NODE_LABELS = {"eks.amazonaws.com/compute-type": "auto"}


def karpenter_nodes(r: Rendering) -> list[NodeGroup]:
    """The nodes the stack's Karpenter NodePools may launch, one per instance type each admits.

    Labels, as Karpenter registers a node (karpenter-provider-aws website/content/en/v1.14/
    concepts/scheduling.md, "Well-Known Labels", and nodepools.md, spec.template): the
    template's labels, every requirement with operator In and one value (Karpenter sets
    single-valued requirements as labels), the instance type it picked, the NodePool's name
    as karpenter.sh/nodepool, and the kubelet's os and arch; taints: the template's. The AMI
    family comes from the EC2NodeClass's alias. A NodePool of EKS Auto Mode (nodeClassRef group
    eks.amazonaws.com) is run by Auto Mode's own Karpenter alike: its nodes carry Auto Mode's
    compute-type label too, and AUTO_MODE_AMI."""
    objects = r.k8s_objects()
    classes = {m["metadata"]["name"]: m for m in objects if m["kind"] == "EC2NodeClass"}
    nodes = []
    for pool in (m for m in objects if m["kind"] == "NodePool"):
        spec = pool["spec"]["template"]["spec"]
        auto_mode = spec["nodeClassRef"].get("group") == AUTO_MODE_NODE_CLASS_GROUP
        node_class = classes.get(spec["nodeClassRef"]["name"])
        alias = ((node_class or {}).get("spec", {}).get("amiSelectorTerms") or [{}])[0].get("alias", "")
        ami = AUTO_MODE_AMI if auto_mode else _ALIAS_AMI_TYPES.get(alias.partition("@")[0], "unknown")
        fixed = {
            req["key"]: req["values"][0]
            for req in spec.get("requirements") or []
            if req["operator"] == "In" and len(req["values"]) == 1
        }
        types: list[str] = next(
            (req["values"] for req in spec.get("requirements") or []
             if req["key"] == "node.kubernetes.io/instance-type" and req["operator"] == "In"),
            [],
        )
        taints = tuple(Taint(str(t["key"]), str(t.get("value") or ""), str(t["effect"])) for t in spec.get("taints") or [])
        name = pool["metadata"]["name"]
        for instance_type in types:
            labels = {
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                **fixed,
                **(pool["spec"]["template"].get("metadata", {}).get("labels") or {}),
                "node.kubernetes.io/instance-type": instance_type,
                "karpenter.sh/nodepool": name,
                **(AUTO_MODE_NODE_LABELS if auto_mode else {}),
            }
            nodes.append(NodeGroup(f"nodepool/{name}/{instance_type}", ami, labels, taints, "", ""))
    return nodes


def pod_template(manifest: Manifest) -> Mapping[str, Any] | None:
    """The pod spec a workload object runs, or None."""
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return (spec.get("template") or {}).get("spec")
    return None


def pod_labels(manifest: Manifest) -> Mapping[str, str]:
    if manifest.get("kind") == "Pod":
        return (manifest.get("metadata") or {}).get("labels") or {}
    if manifest.get("kind") == "CronJob":
        template = ((manifest["spec"].get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    else:
        template = (manifest.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("labels") or {}


def containers(pod_spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(pod_spec.get("initContainers") or []), *(pod_spec.get("containers") or [])]


# NVIDIA device plugin: Bottlerocket's NVIDIA variants run it as a host service
# (bottlerocket-os/bottlerocket, packages/nvidia-k8s-device-plugin), so a second one from the
# chart would register nvidia.com/gpu twice on the same kubelet socket.
DEVICE_PLUGIN_BINARY = "nvidia-device-plugin"


def runs_device_plugin(daemonset: Manifest) -> bool:
    spec = pod_template(daemonset) or {}
    return any(DEVICE_PLUGIN_BINARY in (c.get("command") or [])[:1] for c in spec.get("containers") or [])


def gpu_daemonset_problems(charts: StackCharts) -> list[str]:
    """GPU node daemons land where they serve (nodes of managed node groups and of Karpenter
    and Auto Mode NodePools alike): on every GPU node exactly one device plugin
    (the host's on Bottlerocket and Auto Mode, else the chart's) and exactly one DCGM exporter,
    none on an Auto Mode node (which runs no chart DaemonSet of ours: AWS's GPU stack); none
    on a node without GPUs; each tolerates every GPU pool's taint."""
    groups = node_groups(charts.rendering) + karpenter_nodes(charts.rendering)
    gpu_groups = [g for g in groups if g.gpu]
    problems = []
    plugin = charts.release("nvidia-device-plugin")
    dcgm = charts.release("dcgm-exporter")
    if not [g for g in gpu_groups if not g.auto_mode]:
        return [f"{sr.release.chart} installed with no GPU node group" for sr in (plugin, dcgm) if sr]
    for chart, sr in (("nvidia-device-plugin", plugin), ("dcgm-exporter", dcgm)):
        if sr is None:
            problems.append(f"{chart}: not installed, yet the stack has GPU node groups")
    plugins_on: dict[str, list[str]] = {g.name: (["host"] if g.bottlerocket or g.auto_mode else []) for g in groups}
    exporters_on: dict[str, list[str]] = {g.name: [] for g in groups}
    for sr, tally in ((plugin, plugins_on), (dcgm, exporters_on)):
        if sr is None:
            continue
        for ds in sr.render.of_kind("DaemonSet"):
            spec = pod_template(ds) or {}
            name = ds["metadata"]["name"]
            for g in groups:
                if not can_land(spec, g):
                    continue
                if not g.gpu:
                    problems.append(f"{sr.release.chart}: DaemonSet {name} lands on {g.name}, which has no GPU")
                elif g.auto_mode:
                    problems.append(f"{sr.release.chart}: DaemonSet {name} lands on Auto Mode node {g.name}")
                elif sr is plugin and g.bottlerocket:
                    problems.append(f"{sr.release.chart}: DaemonSet {name} lands on Bottlerocket group {g.name}")
                if sr is dcgm or runs_device_plugin(ds):
                    tally[g.name].append(name)
            if sr is dcgm or runs_device_plugin(ds):
                for g in gpu_groups:
                    if g.auto_mode:
                        continue
                    for taint in untolerated(spec.get("tolerations"), g.taints):
                        problems.append(f"{sr.release.chart}: DaemonSet {name} does not tolerate {g.name}'s taint {taint}")
    problems += device_plugin_config_problems(plugin, gpu_groups) if plugin else []
    for g in gpu_groups:
        if plugin is not None and len(plugins_on[g.name]) != 1:
            problems.append(f"{g.name}: {len(plugins_on[g.name])} NVIDIA device plugins ({plugins_on[g.name]}), not 1")
        wanted = 0 if g.auto_mode else 1
        if dcgm is not None and len(exporters_on[g.name]) != wanted:
            problems.append(f"{g.name}: {len(exporters_on[g.name])} DCGM exporters ({exporters_on[g.name]}), not {wanted}")
    return problems


# The label the chart's config-manager reads to pick a node's device plugin config
# (nvidia-device-plugin 0.20.0 templates/daemonset-device-plugin.yml, NODE_LABEL).
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"


def device_plugin_config_problems(plugin: StackRelease, gpu_groups: Sequence[NodeGroup]) -> list[str]:
    """A node group that asks for a device plugin config (time slicing) gets one the chart's
    plugin can read: named in the ConfigMap its pods mount as available-configs, and not on
    Bottlerocket, whose host plugin never reads the chart's configs."""
    problems = []
    available: set[str] = set()
    for ds in plugin.render.of_kind("DaemonSet"):
        if not runs_device_plugin(ds):
            continue
        spec = pod_template(ds) or {}
        names = {v["configMap"]["name"] for v in spec.get("volumes") or [] if v.get("name") == "available-configs" and v.get("configMap")}
        for cm in plugin.render.of_kind("ConfigMap"):
            if cm["metadata"]["name"] in names:
                available.update((cm.get("data") or {}).keys())
    for g in gpu_groups:
        wanted = g.labels.get(DEVICE_PLUGIN_CONFIG_LABEL)
        if wanted is None:
            continue
        if g.bottlerocket:
            problems.append(f"{g.name}: asks for device plugin config {wanted!r}, which Bottlerocket's host plugin does not read")
        elif wanted not in available:
            problems.append(f"{g.name}: asks for device plugin config {wanted!r}; the chart's plugin has {sorted(available)}")
    return problems


# --- selection: ServiceMonitors, Services, pods -----------------------------------------------


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector: matchLabels and every matchExpression; an empty selector selects all."""
    selector = selector or {}
    if any(labels.get(k) != str(v) for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    return all(requirement_holds(e, labels, LABEL_SELECTOR_OPERATORS) for e in selector.get("matchExpressions") or [])


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    labels: Mapping[str, str]
    selector: Mapping[str, str] | None  # None: its endpoints are kept by a controller
    ports: tuple[Mapping[str, Any], ...]


# Services that exist on every cluster without a chart rendering them:
# kube-apiserver keeps default/kubernetes (pkg/controlplane/controller/kubernetesservice:
# labels component=apiserver, provider=kubernetes; port "https").
API_SERVER_SERVICE = Service(
    "kubernetes", "default", {"component": "apiserver", "provider": "kubernetes"}, None,
    ({"name": "https", "port": 443},),
)


def operator_kubelet_service(render: ChartRender) -> Service | None:
    """The kubelet Service the Prometheus Operator keeps when run with --kubelet-service
    (prometheus-operator pkg/kubelet/controller.go, syncService: labels k8s-app=kubelet,
    app.kubernetes.io/name=kubelet, app.kubernetes.io/managed-by=prometheus-operator; ports
    https-metrics 10250, http-metrics 10255, cadvisor 4194)."""
    for manifest in render.of_kind("Deployment"):
        for c in (pod_template(manifest) or {}).get("containers") or []:
            for arg in c.get("args") or []:
                if str(arg).startswith("--kubelet-service="):
                    namespace, _, name = str(arg).split("=", 1)[1].partition("/")
                    return Service(
                        name, namespace,
                        {"k8s-app": "kubelet", "app.kubernetes.io/name": "kubelet",
                         "app.kubernetes.io/managed-by": "prometheus-operator"},
                        None,
                        ({"name": "https-metrics", "port": 10250}, {"name": "http-metrics", "port": 10255},
                         {"name": "cadvisor", "port": 4194}),
                    )
    return None


# Pods the EKS core add-ons run, which chart Services select: coredns (the add-on's Deployment
# labels its pods k8s-app=kube-dns and serves metrics on container port 9153 "metrics").
EKS_ADDON_PODS: tuple[tuple[str, Mapping[str, str], Mapping[str, int]], ...] = (
    ("kube-system", {"k8s-app": "kube-dns", "eks.amazonaws.com/component": "coredns"}, {"metrics": 9153, "dns": 53, "dns-tcp": 53}),
)


def chart_services(charts: StackCharts, sr: StackRelease) -> list[Service]:
    out = []
    for manifest in sr.render.of_kind("Service"):
        spec = manifest.get("spec") or {}
        out.append(
            Service(
                manifest["metadata"]["name"],
                charts.namespace_of(manifest, sr.release) or "",
                manifest["metadata"].get("labels") or {},
                spec.get("selector"),
                tuple(spec.get("ports") or []),
            )
        )
    kubelet = operator_kubelet_service(sr.render)
    return out + ([kubelet] if kubelet else []) + [API_SERVER_SERVICE]


def operator_pods(charts: StackCharts, sr: StackRelease) -> list[tuple[str, Mapping[str, str], dict[str, int]]]:
    """The pods the Prometheus Operator makes for the Prometheus and Alertmanager objects a
    chart renders (pkg/apis/monitoring/v1 prometheus_types.go / alertmanager_types.go,
    podMetadata: the labels it always sets; the server's port is named spec.portName,
    default "web"; the config reloader's "reloader-web", 8080: pkg/operator/config_reloader.go)."""
    out: list[tuple[str, Mapping[str, str], dict[str, int]]] = []
    for manifest in sr.render.objects:
        kind, name = manifest.get("kind"), str((manifest.get("metadata") or {}).get("name"))
        if not str(manifest.get("apiVersion", "")).startswith("monitoring.coreos.com/") or kind not in ("Prometheus", "Alertmanager"):
            continue
        spec = manifest.get("spec") or {}
        app = "prometheus" if kind == "Prometheus" else "alertmanager"
        labels = {
            **((spec.get("podMetadata") or {}).get("labels") or {}),
            app: name,
            "app.kubernetes.io/name": app,
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "prometheus-operator",
        }
        if kind == "Prometheus":
            labels.update({"operator.prometheus.io/name": name, "operator.prometheus.io/shard": "0"})
        port = 9090 if kind == "Prometheus" else 9093
        ports = {str(spec.get("portName") or "web"): port, str(port): port, "reloader-web": 8080, "8080": 8080}
        out.append((charts.namespace_of(manifest, sr.release) or "", labels, ports))
    return out


def _pods(charts: StackCharts, sr: StackRelease) -> list[tuple[str, Mapping[str, str], dict[str, int]]]:
    """(namespace, labels, named container ports) of every pod the chart runs."""
    out = operator_pods(charts, sr)
    for manifest in sr.render.objects:
        spec = pod_template(manifest)
        if spec is None:
            continue
        ports = {
            str(p["name"]): int(p["containerPort"])
            for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("name")
        }
        numbers = {str(p["containerPort"]): int(p["containerPort"]) for c in spec.get("containers") or [] for p in c.get("ports") or []}
        out.append((charts.namespace_of(manifest, sr.release) or "", pod_labels(manifest), {**numbers, **ports}))
    return out


def service_monitor_problems(charts: StackCharts) -> list[str]:
    """Every ServiceMonitor a chart renders selects a Service (its selector, in the namespaces
    its namespaceSelector names, else its own) that has each endpoint's port by name; and a
    selected Service that picks pods leads that port to a container port of a pod it selects."""
    problems = []
    for sr in charts.releases:
        services = chart_services(charts, sr)
        pods = _pods(charts, sr)
        for sm in sr.render.of_kind("ServiceMonitor"):
            spec = sm.get("spec") or {}
            own = charts.namespace_of(sm, sr.release) or ""
            ns_selector = spec.get("namespaceSelector") or {}
            def in_scope(namespace: str) -> bool:
                if ns_selector.get("any"):
                    return True
                return namespace in (ns_selector.get("matchNames") or [own])
            chosen = [s for s in services if in_scope(s.namespace) and selects(spec.get("selector"), s.labels)]
            where = f"{sr.release.chart}: ServiceMonitor {own}/{sm['metadata']['name']}"
            if not chosen:
                problems.append(f"{where} selects no Service")
                continue
            for endpoint in spec.get("endpoints") or []:
                port = endpoint.get("port")
                if port is None:
                    problems.append(f"{where}: endpoint without a named port ({endpoint})")
                    continue
                with_port = [s for s in chosen if any(p.get("name") == port for p in s.ports)]
                if not with_port:
                    problems.append(f"{where}: no selected Service has a port named {port!r}")
                for s in with_port:
                    if s.selector is None:
                        continue
                    target = next(p for p in s.ports if p.get("name") == port).get("targetPort", next(p for p in s.ports if p.get("name") == port).get("port"))
                    backing = [(ns, lbl, ports) for ns, lbl, ports in pods if ns == s.namespace and selects({"matchLabels": s.selector}, lbl)]
                    backing += [
                        (ns, lbl, dict(ports)) for ns, lbl, ports in EKS_ADDON_PODS
                        if ns == s.namespace and selects({"matchLabels": s.selector}, lbl)
                    ]
                    if not backing:
                        problems.append(f"{where}: Service {s.namespace}/{s.name} selects no pod")
                    elif not any(str(target) in ports or target in ports.values() for _, _, ports in backing):
                        problems.append(f"{where}: Service {s.namespace}/{s.name} port {port} targets {target!r}, which no selected pod exposes")
    return problems


def gpu_metric_label_problems(charts: StackCharts, rules: Sequence[Any]) -> list[str]:
    """A rule or query that reads the DCGM exporter's series by `exported_pod` / `exported_namespace`
    holds only if the exporter labels each GPU's series with the pod using it
    (DCGM_EXPORTER_KUBERNETES=true, reading the kubelet's pod-resources socket) and its
    ServiceMonitor leaves honorLabels off, so Prometheus renames those labels, which clash
    with the target's own pod / namespace, to exported_* (Prometheus docs, scrape_config
    honor_labels)."""
    if not any("exported_pod" in json.dumps(r) for r in rules):
        return []
    dcgm = charts.release("dcgm-exporter")
    if dcgm is None:
        return ["a rule reads DCGM series, but no DCGM exporter is installed"]
    problems = []
    for ds in dcgm.render.of_kind("DaemonSet"):
        spec = pod_template(ds) or {}
        if container_env(ds).get("DCGM_EXPORTER_KUBERNETES") != "true":
            problems.append("the DCGM exporter does not map GPUs to pods (DCGM_EXPORTER_KUBERNETES)")
        mounts = {m["mountPath"] for c in spec.get("containers") or [] for m in c.get("volumeMounts") or []}
        if "/var/lib/kubelet/pod-resources" not in mounts:
            problems.append("the DCGM exporter does not mount the kubelet's pod-resources socket")
    monitors = dcgm.render.of_kind("ServiceMonitor")
    if not monitors:
        problems.append("the DCGM exporter has no ServiceMonitor: nothing scrapes the GPU series")
    for sm in monitors:
        for endpoint in sm["spec"].get("endpoints") or []:
            if endpoint.get("honorLabels"):
                problems.append(f"ServiceMonitor {sm['metadata']['name']} honours labels: the series keep pod / namespace")
    return problems


# --- identities -------------------------------------------------------------------------------


def pod_service_accounts(charts: StackCharts) -> dict[tuple[str, str], list[str]]:
    """(namespace, service account) -> the workloads whose pods run as it, for every chart
    and for the stack's own objects."""
    out: dict[tuple[str, str], list[str]] = {}
    for sr in charts.releases:
        for manifest in sr.render.objects:
            spec = pod_template(manifest)
            if spec is not None:
                key = (charts.namespace_of(manifest, sr.release) or "", str(spec.get("serviceAccountName") or "default"))
                out.setdefault(key, []).append(f"{sr.release.chart}/{manifest['kind']}/{manifest['metadata']['name']}")
    for manifest in charts.rendering.k8s_objects():
        spec = pod_template(manifest)
        if spec is not None:
            key = (str(manifest["metadata"].get("namespace", "default")), str(spec.get("serviceAccountName") or "default"))
            out.setdefault(key, []).append(f"stack/{manifest['kind']}/{manifest['metadata']['name']}")
    return out


def identity_problems(charts: StackCharts) -> list[str]:
    """Each Pod Identity association names a service account that a chart or the stack
    renders and that some pod runs as; each release that waits for an association runs its
    pods as that account; an IRSA annotation on a chart's account names a role that trusts it."""
    r = charts.rendering
    problems = []
    used = pod_service_accounts(charts)
    accounts = {
        (charts.namespace_of(m, sr.release) or "", m["metadata"]["name"])
        for sr in charts.releases for m in sr.render.of_kind("ServiceAccount")
    } | {(m["metadata"].get("namespace", "default"), m["metadata"]["name"]) for m in r.k8s_objects() if m["kind"] == "ServiceAccount"}
    cluster = str(r.outputs.get("cluster_name"))
    associations = {a.urn: a for a in r.of_type(POD_IDENTITY)}
    for a in associations.values():
        key = (str(a.inputs["namespace"]), str(a.inputs["serviceAccount"]))
        if a.inputs.get("clusterName") != cluster:
            problems.append(f"{a.name}: for cluster {a.inputs.get('clusterName')}, not {cluster}")
        if key not in accounts:
            problems.append(f"{a.name}: names service account {key[0]}/{key[1]}, which nothing renders")
        if key not in used:
            problems.append(f"{a.name}: names {key[0]}/{key[1]}, which no pod runs as")
    for sr in charts.releases:
        waited = [associations[d] for d in sr.registered.depends_on if d in associations]
        runs_as = {k for k, owners in used.items() if any(o.startswith(f"{sr.release.chart}/") for o in owners)}
        for a in waited:
            key = (str(a.inputs["namespace"]), str(a.inputs["serviceAccount"]))
            if key not in runs_as:
                problems.append(
                    f"{sr.release.chart}: waits for {a.name} ({key[0]}/{key[1]}) but its pods run as {sorted(runs_as)}"
                )
        for m in sr.render.of_kind("ServiceAccount"):
            arn = ((m["metadata"].get("annotations") or {}).get("eks.amazonaws.com/role-arn"))
            if arn:
                subject = f"system:serviceaccount:{charts.namespace_of(m, sr.release)}:{m['metadata']['name']}"
                roles = [x for x in r.of_type("aws:iam/role:Role") if x.outputs.get("arn") == arn]
                if not roles or subject not in json.dumps(roles[0].inputs.get("assumeRolePolicy")):
                    problems.append(f"{sr.release.chart}: ServiceAccount {subject} names IRSA role {arn}, which does not trust it")
    return problems


# --- cluster-autoscaler: which Auto Scaling groups it discovers -------------------------------


def auto_discovery_specs(args: Iterable[str]) -> list[dict[str, str]]:
    """--node-group-auto-discovery=asg:tag=<key>[=<value>],... as cluster-autoscaler parses it
    (cloudprovider/aws/aws_manager.go, parseASGAutoDiscoverySpec)."""
    specs = []
    for arg in args:
        if not arg.startswith("--node-group-auto-discovery="):
            continue
        discoverer, _, param = arg.split("=", 1)[1].partition(":")
        assert discoverer == "asg", arg
        key, _, value = param.partition("=")
        assert key == "tag" and value, arg
        spec = {}
        for label in value.split(","):
            k, _, v = label.partition("=")
            spec[k] = v
        specs.append(spec)
    return specs


def eks_asg_tags(group: NodeGroup) -> dict[str, str]:
    """The tags EKS puts on a managed node group's Auto Scaling group (EKS user guide,
    "Managed node groups": the cluster-autoscaler auto-discovery tags, plus its own)."""
    return {
        "k8s.io/cluster-autoscaler/enabled": "true",
        f"k8s.io/cluster-autoscaler/{group.cluster}": "owned",
        f"kubernetes.io/cluster/{group.cluster}": "owned",
        "eks:cluster-name": group.cluster,
        "eks:nodegroup-name": group.name,
    }


def asg_tags(group: NodeGroup, r: Rendering) -> dict[str, str]:
    """The tags on the group's Auto Scaling group: EKS's, and the ones the stack adds."""
    tags = eks_asg_tags(group)
    for t in r.of_type(ASG_TAG):
        if t.inputs.get("autoscalingGroupName") == group.asg_name:
            tags[t.inputs["tag"]["key"]] = str(t.inputs["tag"]["value"])
    return tags


def discovered_groups(args: Iterable[str], r: Rendering, others: Iterable[NodeGroup] = ()) -> set[str]:
    """The node groups (the stack's, and `others` of the same cluster that the stack did not
    make) whose Auto Scaling group carries every tag the discovery specs ask for (all specs'
    tags merged into one filter: auto_scaling_groups.go, buildAsgTags; a key alone asks for
    the key, key=value for that value: aws_wrapper.go, getAutoscalingGroupsByTags)."""
    wanted: dict[str, str] = {}
    for spec in auto_discovery_specs(args):
        wanted.update(spec)
    if not wanted:
        return set()
    found = set()
    for group in [*node_groups(r), *others]:
        tags = asg_tags(group, r)
        if all(k in tags and (not v or tags[k] == v) for k, v in wanted.items()):
            found.add(group.name)
    return found


def container_args(manifest: Manifest, container: str | None = None) -> list[str]:
    spec = pod_template(manifest) or {}
    return [
        str(a)
        for c in spec.get("containers") or [] if container is None or c.get("name") == container
        for a in [*(c.get("command") or []), *(c.get("args") or [])]
    ]


def container_env(manifest: Manifest) -> dict[str, str]:
    spec = pod_template(manifest) or {}
    return {str(e["name"]): str(e.get("value")) for c in spec.get("containers") or [] for e in c.get("env") or [] if "value" in e}


# --- AWS Load Balancer Controller: which Gateway controllers run ------------------------------

# Controller v3.5.0 feature gates and their defaults (pkg/config/feature_gates.go,
# NewFeatureGates); --feature-gates=Name=bool,... sets them (Set: an unknown name is fatal).
LBC_GATE_DEFAULTS: dict[str, bool] = {
    "ListenerRulesTagging": True, "WeightedTargetGroups": True, "ServiceTypeLoadBalancerOnly": False,
    "EndpointsFailOpen": True, "EnableServiceController": True, "EnableIPTargetType": True,
    "EnableRGTAPI": False, "SubnetsClusterTagCheck": True, "NLBHealthCheckAdvancedConfig": True,
    "NLBSecurityGroup": True, "ALBSingleSubnet": False, "SubnetDiscoveryByReachability": True,
    "LBCapacityReservation": True, "NLBGatewayAPI": True, "ALBGatewayAPI": True,
    "GlobalAcceleratorController": False, "EnableTCPUDPListener": False, "EnhancedDefaultBehavior": False,
    "EnableDefaultTagsLowPriority": False, "ALBTargetControlAgent": False, "GatewayListenerSet": True,
    "EnableCertificateManagement": False, "IngressPlanAnnotation": False,
}
# At start the controller asks discovery for these kinds and turns a Gateway controller off
# when one is missing (pkg/gateway/crddetect/gateway_feature_flags.go): ALB unconditionally,
# NLB and ListenerSet only when left at their default; nothing when all three were set.
_LBC_TYPES = ("TargetGroupConfiguration", "LoadBalancerConfiguration", "ListenerRuleConfiguration")
LBC_GATEWAY_KINDS: dict[str, dict[str, tuple[str, ...]]] = {
    "ALBGatewayAPI": {
        "gateway.networking.k8s.io/v1": ("Gateway", "GatewayClass", "HTTPRoute", "GRPCRoute"),
        "gateway.k8s.aws/v1": _LBC_TYPES,
    },
    "NLBGatewayAPI": {
        "gateway.networking.k8s.io/v1": ("Gateway", "GatewayClass", "TLSRoute", "TCPRoute", "UDPRoute"),
        "gateway.k8s.aws/v1": _LBC_TYPES,
    },
    "GatewayListenerSet": {"gateway.networking.k8s.io/v1": ("ListenerSet",)},
}
# GatewayClass controllerName -> the gate that runs its controller
# (pkg/gateway/constants/controller_constants.go).
LBC_GATEWAY_CONTROLLERS = {"gateway.k8s.aws/alb": "ALBGatewayAPI", "gateway.k8s.aws/nlb": "NLBGatewayAPI"}


def lbc_feature_gates(args: Iterable[str], served: Mapping[str, set[str]]) -> dict[str, bool]:
    """The controller's gates once it runs: defaults, then --feature-gates, then the CRD
    detection against what the cluster serves."""
    gates = dict(LBC_GATE_DEFAULTS)
    explicit: set[str] = set()
    for arg in args:
        if arg.startswith("--feature-gates="):
            for pair in filter(None, arg.split("=", 1)[1].split(",")):
                name, _, value = pair.partition("=")
                name = name.strip()
                assert name in gates, f"controller v3.5.0 exits on unknown feature gate {name!r}"
                gates[name] = value.strip().lower() in ("1", "t", "true")
                explicit.add(name)
    if explicit >= set(LBC_GATEWAY_KINDS):
        return gates
    for gate, kinds in LBC_GATEWAY_KINDS.items():
        missing = [k for gv, ks in kinds.items() for k in ks if k not in served.get(gv, set())]
        if missing and (gate == "ALBGatewayAPI" or gate not in explicit):
            gates[gate] = False
    return gates


# --- images -----------------------------------------------------------------------------------

# prometheus-operator flags whose value is an image it runs (cmd/operator/main.go).
IMAGE_FLAGS = ("--prometheus-config-reloader", "--thanos-default-base-image", "--prometheus-default-base-image", "--alertmanager-default-base-image")


def images(manifest: Manifest) -> list[str]:
    """Every image an object makes the cluster run: its containers', the Prometheus Operator's
    custom resources' spec.image, and image-valued operator flags."""
    found = []
    spec = pod_template(manifest)
    if spec is not None:
        for c in containers(spec):
            found.append(str(c.get("image")))
            found += [str(a).split("=", 1)[1] for a in c.get("args") or [] if str(a).split("=", 1)[0] in IMAGE_FLAGS]
    elif str(manifest.get("apiVersion", "")).startswith("monitoring.coreos.com/") and (manifest.get("spec") or {}).get("image"):
        found.append(str(manifest["spec"]["image"]))
    return found


def image_pin(image: str) -> str | None:
    """'digest' or 'tag' when the reference pins what runs; None when it floats."""
    if "@sha256:" in image:
        return "digest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.rsplit(":", 1)[1]
    return None if not tag or tag == "latest" else "tag"


# --- value keys the templates read ------------------------------------------------------------


def leaves(values: Any, path: ValuePath = ()) -> Iterator[ValuePath]:
    """Paths of every leaf we pass: scalars, list elements, and empty maps / lists."""
    if isinstance(values, dict) and values:
        for k, v in values.items():
            yield from leaves(v, (*path, k))
    elif isinstance(values, list) and values:
        for i, v in enumerate(values):
            yield from leaves(v, (*path, i))
    else:
        yield path


def path_text(path: ValuePath) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def path_shape(path: ValuePath) -> str:
    """The path with list positions erased: what the allowlist and the grid dedupe key on."""
    return path_text(tuple("[]" if isinstance(p, int) else p for p in path)).replace(".[]", "[]")


def _get(values: Any, path: ValuePath) -> Any:
    for p in path:
        values = values[p]
    return values


def changed_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return f"{value}x" if value else "x"
    if isinstance(value, dict):
        return {"mutated": "x"}
    if isinstance(value, list):
        return ["x"]
    return "x"


def with_leaf(values: Mapping[str, Any], path: ValuePath, change: Callable[[Any], Any] | None) -> dict[str, Any]:
    """A copy of `values` with the leaf at `path` changed by `change`, or removed (None)."""
    out = copy.deepcopy(dict(values))
    parent = _get(out, path[:-1])
    if change is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = change(parent[path[-1]])
    return out


_VOLATILE_LINE = re.compile(r"^(\s*-?\s*[\w.\-/\"']+:)\s.*$")


def volatile_keys(first: str, second: str) -> set[str]:
    """Keys whose values differ between two renders of the same input (generated TLS
    material: aws-load-balancer-controller 3.5.0 makes its webhook certificate with genCA)."""
    keys = set()
    for a, b in zip(first.splitlines(), second.splitlines()):
        if a != b:
            found = _VOLATILE_LINE.match(a)
            assert found, f"a render differs from itself outside a key: {a[:80]!r}"
            keys.add(found.group(1).strip())
    assert len(first.splitlines()) == len(second.splitlines()), "a render differs from itself in length"
    return keys


def normalised(text: str, keys: set[str]) -> str:
    if not keys:
        return text
    pattern = re.compile(r"^(\s*)(" + "|".join(re.escape(k) for k in sorted(keys)) + r")\s.*$", re.M)
    return pattern.sub(r"\1\2 <volatile>", text)


@dataclass(frozen=True)
class LeafVerdict:
    path: ValuePath
    read: bool
    how: str  # what showed it: "changed", "removed", "render fails", or why not


def _markers(values: Mapping[str, Any], paths: Sequence[ValuePath], taken: str) -> dict[ValuePath, Any]:
    """A distinct marker for each string or integer leaf, one that the original render does
    not already contain (so finding it in a render means the template wrote that leaf)."""
    out: dict[ValuePath, Any] = {}
    number = 61000
    for i, path in enumerate(paths):
        value = _get(values, path)
        if isinstance(value, str):
            out[path] = f"valuemarker{i:05d}z"
        elif isinstance(value, int) and not isinstance(value, bool):
            number += 1
            while re.search(rf"\b{number}\b", taken):
                number += 1
            out[path] = number
    return out


_SECRET_DATA = re.compile(r"^\s+[\w.\-]+: \"?([A-Za-z0-9+/]{8,}={0,2})\"?$", re.M)


def _decoded_secrets(text: str) -> list[str]:
    """The base64 values of a render (Secret data), decoded: a chart writes values there too."""
    out = []
    for found in _SECRET_DATA.finditer(text):
        try:
            out.append(base64.b64decode(found.group(1), validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out


def leaf_verdicts(release: Release, paths: Sequence[ValuePath]) -> list[LeafVerdict]:
    """Whether the chart's templates read each leaf. First every string and integer leaf at
    once is set to a marker of its own; a marker in the render is a leaf the templates
    wrote out (a render that fails is split in halves). Each leaf left is rendered with it
    changed, then (if that renders the same) with it removed: read when the manifests
    differ from the original's or the render fails. The chart's values schema is off (a
    schema is not a template); CRDs are compared only to settle a tie (cheaper)."""
    base: dict[bool, str] = {}
    volatile: dict[bool, set[str]] = {}
    for crds in (False, True):
        first = helm_text(release, include_crds=crds, skip_schema=True)
        assert first.returncode == 0, first.stderr
        if not crds:
            # What varies from one render to the next (CRDs are static files: same keys).
            again = helm_text(release, include_crds=crds, skip_schema=True, cached=False)
            assert again.returncode == 0, again.stderr
            volatile[crds] = volatile_keys(first.stdout, again.stdout)
        else:
            volatile[crds] = volatile[False]
        base[crds] = normalised(first.stdout, volatile[crds])
    values = release.values
    verdicts: dict[ValuePath, LeafVerdict] = {}

    def probe(marked: dict[ValuePath, Any]) -> None:
        if not marked:
            return
        variant = copy.deepcopy(values)
        for path, marker in marked.items():
            _get(variant, path[:-1])[path[-1]] = marker
        done = helm_text(release.with_values(variant), include_crds=False, skip_schema=True)
        if done.returncode != 0:
            if len(marked) > 1:
                items = list(marked.items())
                probe(dict(items[: len(items) // 2]))
                probe(dict(items[len(items) // 2 :]))
            return
        written = done.stdout + "\n".join(_decoded_secrets(done.stdout))
        for path, marker in marked.items():
            if re.search(rf"\b{re.escape(str(marker))}\b", written):
                verdicts[path] = LeafVerdict(path, True, "written out")

    probe(_markers(values, paths, base[True]))

    def differs(variant: Release) -> str | None:
        for crds in (False, True):
            done = helm_text(variant, include_crds=crds, skip_schema=True)
            if done.returncode != 0:
                return "render fails"
            if normalised(done.stdout, volatile[crds]) != base[crds]:
                return "changed"
        return None

    def judge(path: ValuePath) -> LeafVerdict:
        how = differs(release.with_values(with_leaf(values, path, changed_value)))
        if how:
            return LeafVerdict(path, True, how)
        how = differs(release.with_values(with_leaf(values, path, None)))
        if how:
            return LeafVerdict(path, True, "removed" if how == "changed" else how)
        return LeafVerdict(path, False, "renders the same changed and removed")

    rest = [p for p in paths if p not in verdicts]
    with ThreadPoolExecutor(WORKERS) as pool:
        for verdict in pool.map(judge, rest):
            verdicts[verdict.path] = verdict
    return [verdicts[p] for p in paths]
