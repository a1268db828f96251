"""Offline checks of deploy/kubernetes, run by validate.sh inside its venv.

usage: validate.py DIR [--rendered FILE --renderer NAME]

1. Every *.yaml in DIR but kustomization.yaml: each document is validated in
   strict mode against the bundled Kubernetes JSON schemas
   (kubernetes-validate), for every version in $AMO_K8S_VERSIONS.
2. kustomization.yaml: its kind and apiVersion; every resource it lists is a
   file in DIR that passed step 1; no `namespace:` and no object that names
   a namespace (the base is namespace-agnostic).
3. Consistency: the Service, PDB and Deployment selectors match the pod
   labels, the HPA targets the Deployment, the Ingress backend is the
   Service's port, envFrom/secretKeyRef/secret volumes name objects (and
   keys) defined here, probe ports are container ports; the grace period
   is the preStop sleep + AMO_DRAIN_GRACE_SECS + AMO_DRAIN_TIMEOUT_SECS + a margin of 10 to 60 s;
   the Deployment sets no `replicas` when an HPA owns it; the Redis
   password comes from a mounted Secret (AMO_REDIS_PASSWORD_FILE), never
   from a ConfigMap's AMO_REDIS_URL.
4. With --rendered: the renderer's output is validated like step 1.

Prints one summary line on success; every problem, then exit 1, otherwise.
"""

import argparse
import os
import re
import sys
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

problems = []
GATEWAY_GROUP = "gateway.networking.k8s.io"


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def load_docs(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        problem(path, f"cannot read YAML: {e}")
        return []


def validate_docs(where, docs, versions):
    ok = 0
    for i, doc in enumerate(docs):
        label = f"{where}[{i}] {doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}" \
            if isinstance(doc, dict) else f"{where}[{i}]"
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            problem(label, "not a Kubernetes object (apiVersion and kind required)")
            continue
        if doc["apiVersion"].startswith(GATEWAY_GROUP + "/"):
            # Not a built-in kind: gateway-api/check.sh validates it against
            # the Gateway API's own schemas.
            ok += 1
            continue
        good = True
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                problem(label, f"invalid for Kubernetes {version} at {path}: {e.message}")
                good = False
            except SchemaNotFoundError:
                problem(label, f"no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version}")
                good = False
        ok += good
    return ok


def by_kind(objs, kind):
    return [o for o in objs if o.get("kind") == kind]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def prestop_seconds(container):
    """The preStop sleep: `exec: [/bin/sleep, N]` or `sleep: {seconds: N}`."""
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    command = (pre.get("exec") or {}).get("command") or []
    if len(command) == 2 and command[0].endswith("sleep"):
        return int(command[1])
    return 0


def declared_settings():
    """The settings the service declares, {variable: default text}, from the
    table of docs/configuration.md (which a unit test keeps equal to
    src/config/declared.rs, where each setting is declared once)."""
    table = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    settings = {}
    for line in table.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`AMO_"):
            settings[cells[0].strip("`")] = cells[2]
    if not settings:
        problem("docs/configuration.md", "no settings table")
    return settings


SETTINGS = declared_settings()


def declared_default_int(variable):
    """The declared default of a whole-number setting: `30` → 30."""
    text = SETTINGS.get(variable, "")
    return int(text.split("`")[1]) if text.startswith("`") else None


def setting(container, cms, variable):
    """The value a container gets for `variable`: its env, else a ConfigMap
    of its envFrom, else the declared default (whole numbers)."""
    value = None
    for ef in container.get("envFrom", []):
        name = (ef.get("configMapRef") or {}).get("name")
        found = (cms.get(name) or {}).get("data", {}).get(variable)
        if found is not None:
            value = int(found)
    for e in container.get("env", []):
        if e["name"] == variable and "value" in e:
            value = int(e["value"])
    return declared_default_int(variable) if value is None else value


def text_setting(container, cms, variable):
    """The text a container gets for `variable` (its env, else a ConfigMap
    of its envFrom), and where it comes from; (None, None) when unset."""
    value, source = None, None
    for ef in container.get("envFrom", []):
        name = (ef.get("configMapRef") or {}).get("name")
        found = (cms.get(name) or {}).get("data", {}).get(variable)
        if found is not None:
            value, source = found, f"ConfigMap/{name}"
    for e in container.get("env", []):
        if e["name"] == variable:
            value, source = e.get("value"), "env"
            if "valueFrom" in e:
                source = "valueFrom"
    return value, source


def redis_password_from_secret(where, pod, cms, secrets):
    """The Redis password never sits in a ConfigMap or in the pod spec: no
    password in AMO_REDIS_URL, and AMO_REDIS_PASSWORD_FILE names a file of
    a mounted Secret volume that holds it (docs/operations.md, What Redis
    must be)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        url, source = text_setting(c, cms, "AMO_REDIS_URL")
        if url and re.search(r"://[^/@]*:[^/@]+@", url):
            problem(where, f"AMO_REDIS_URL in {source} holds a password: mount it from a Secret "
                           "and name the file in AMO_REDIS_PASSWORD_FILE")
        path, source = text_setting(c, cms, "AMO_REDIS_PASSWORD_FILE")
        if url and not path:
            problem(where, "no AMO_REDIS_PASSWORD_FILE: the Redis password comes from a Secret")
        if not path:
            continue
        found = False
        for m in c.get("volumeMounts", []):
            prefix = m["mountPath"].rstrip("/") + "/"
            secret = (volumes.get(m["name"]) or {}).get("secret")
            if not path.startswith(prefix) or not secret:
                continue
            file = path[len(prefix):]
            items = secret.get("items")
            keys = [i["key"] for i in items if i["path"] == file] if items else [file]
            stored = secrets.get(secret["secretName"])
            held = {**stored.get("stringData", {}), **stored.get("data", {})} if stored else {}
            found = any(key in held for key in keys)
        if not found:
            problem(where, f"AMO_REDIS_PASSWORD_FILE={path} ({source}) is not a key of a mounted Secret volume")


def known_variables(where, names):
    """Every AMO_* variable a manifest sets is one the service reads."""
    for name in names:
        if name.startswith("AMO_") and name not in SETTINGS:
            problem(where, f"sets {name}, which the service does not read (docs/configuration.md)")


def drain_budget(where, pod, cms):
    """terminationGracePeriodSeconds = preStop + AMO_DRAIN_GRACE_SECS +
    AMO_DRAIN_TIMEOUT_SECS + margin: after SIGTERM the service stays in the
    grace (not ready, still accepting) before it drains, and the kubelet
    must not SIGKILL a pod that is still draining within its own timeout."""
    grace = pod.get("terminationGracePeriodSeconds", 30)
    for c in pod["containers"]:
        readiness_grace = setting(c, cms, "AMO_DRAIN_GRACE_SECS")
        drain = setting(c, cms, "AMO_DRAIN_TIMEOUT_SECS")
        margin = grace - prestop_seconds(c) - readiness_grace - drain
        if not 10 <= margin <= 60:
            problem(where, f"terminationGracePeriodSeconds {grace} = preStop {prestop_seconds(c)} + "
                    f"AMO_DRAIN_GRACE_SECS {readiness_grace} + AMO_DRAIN_TIMEOUT_SECS {drain} + "
                    f"margin {margin}: the margin must be 10 to 60 s")


# The memory plan (docs/operations.md#memory-plan), measured on a service
# process: a replica's RSS idle (33 MiB release, 40 MiB debug: the larger
# is kept), and its peak growth per upload in flight: a body of unknown
# length (chunked) or a resumable upload buffers one part of
# AMO_S3_PART_SIZE_BYTES, two while the buffer grows, plus 2 MiB of stream
# buffers (18 MiB at 8 MiB parts, bench/streaming.sh); a body of declared
# length streams its parts through and holds less. The test
# slow_clients::a_replica_at_its_upload_cap_stays_under_its_memory_plan
# holds a replica at its cap with slow writers and checks its peak RSS
# against the same figures.
IDLE_MIB = 40
STREAM_BUFFERS_MIB = 2
# A download streams with backpressure: one whose reader stopped holds about
# a MiB (8 such downloads added 5-10 MiB in the same test); 2 are counted.
DOWNLOAD_MIB = 2


def upload_mib(part_bytes):
    """The most one upload in flight holds, in MiB, at this part size."""
    return 2 * part_bytes / (1 << 20) + STREAM_BUFFERS_MIB


def mebibytes(quantity):
    """A Kubernetes memory quantity in MiB: 1Gi → 1024, 512Mi → 512."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if str(quantity).endswith(suffix):
            return float(str(quantity)[: -len(suffix)]) * factor
    return float(quantity) / (1 << 20)


def memory_budget(where, pod, cms):
    """The worst case of what the service may hold at once fits the
    container's memory limit, with 5 % to spare: idle +
    AMO_MAX_CONCURRENT_UPLOADS uploads of two AMO_S3_PART_SIZE_BYTES parts
    each + AMO_MAX_CONCURRENT_DOWNLOADS downloads + AMO_V1_UPLOAD_MEMORY_BYTES
    of v1 bodies. A cap at 0 (none) does not fit any limit. The memory request equals the limit, so the
    scheduler reserves the plan and the pod is never the first evicted under
    node memory pressure."""
    for c in pod["containers"]:
        resources = c.get("resources") or {}
        limit = (resources.get("limits") or {}).get("memory")
        if limit is None:
            problem(where, "the container has no memory limit")
            continue
        request = (resources.get("requests") or {}).get("memory")
        if request is None or mebibytes(request) != mebibytes(limit):
            problem(where, f"the memory request {request} is not the limit {limit}: the node may "
                    "not have the memory the plan counts on (docs/operations.md#memory-plan)")
        uploads = setting(c, cms, "AMO_MAX_CONCURRENT_UPLOADS")
        part = setting(c, cms, "AMO_S3_PART_SIZE_BYTES")
        downloads = setting(c, cms, "AMO_MAX_CONCURRENT_DOWNLOADS")
        v1_mib = setting(c, cms, "AMO_V1_UPLOAD_MEMORY_BYTES") / (1 << 20)
        per_upload = upload_mib(part)
        need = IDLE_MIB + uploads * per_upload + downloads * DOWNLOAD_MIB + v1_mib
        if 0 in (uploads, downloads, v1_mib) or need > 0.95 * mebibytes(limit):
            problem(where, f"memory limit {limit} does not hold the worst case, {need:.0f} MiB: idle "
                    f"{IDLE_MIB} MiB + AMO_MAX_CONCURRENT_UPLOADS {uploads or 'unbounded'} x "
                    f"{per_upload:.0f} MiB (two AMO_S3_PART_SIZE_BYTES parts of {part} + "
                    f"{STREAM_BUFFERS_MIB} MiB) + AMO_MAX_CONCURRENT_DOWNLOADS {downloads or 'unbounded'} x "
                    f"{DOWNLOAD_MIB} MiB + AMO_V1_UPLOAD_MEMORY_BYTES {v1_mib or 'unbounded'} MiB, "
                    "with 5 % to spare")


def hardened(where, pod):
    """The pod cannot run as root, write its image, gain a capability or
    skip the runtime's seccomp filter: each setting on the container or,
    where Kubernetes allows it, on the pod."""
    pod_ctx = pod.get("securityContext") or {}
    for c in pod["containers"]:
        ctx = c.get("securityContext") or {}

        def either(key):
            return ctx.get(key, pod_ctx.get(key))

        if either("runAsNonRoot") is not True:
            problem(where, f"container {c['name']}: runAsNonRoot is not true")
        if ctx.get("readOnlyRootFilesystem") is not True:
            problem(where, f"container {c['name']}: readOnlyRootFilesystem is not true")
        if "ALL" not in ((ctx.get("capabilities") or {}).get("drop") or []):
            problem(where, f"container {c['name']}: capabilities do not drop ALL")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problem(where, f"container {c['name']}: allowPrivilegeEscalation is not false")
        if (either("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problem(where, f"container {c['name']}: seccompProfile is not RuntimeDefault")


# The egress the pods need, one rule each: (what, protocols of its ports).
EGRESS = [("DNS", {"UDP", "TCP"}), ("Redis", {"TCP"}), ("Ceph RGW", {"TCP"}), ("the chain node", {"TCP"})]


def least_egress(objs, pod_labels):
    """A NetworkPolicy of the pods restricts egress to DNS, Redis, the RGW
    and the chain node: four rules, in that order, each naming its
    destination and its ports (a rule without `to` or `ports` opens
    everything of that kind)."""
    policies = [n for n in by_kind(objs, "NetworkPolicy")
                if matches(n["spec"]["podSelector"].get("matchLabels"), pod_labels)]
    if not policies:
        problem("NetworkPolicy", "none selects the pods")
    for n in policies:
        where = f"NetworkPolicy/{n['metadata']['name']}"
        if "Egress" not in n["spec"].get("policyTypes", []):
            problem(where, "does not restrict egress (policyTypes lacks Egress)")
            continue
        rules = n["spec"].get("egress") or []
        if len(rules) != len(EGRESS):
            problem(where, f"{len(rules)} egress rules; expected {len(EGRESS)}: {', '.join(w for w, _ in EGRESS)}")
        for rule, (what, protocols) in zip(rules, EGRESS):
            ports = rule.get("ports") or []
            if not rule.get("to"):
                problem(where, f"the {what} rule allows every destination")
            if not ports or any(not isinstance(p.get("port"), int) or "endPort" in p for p in ports):
                problem(where, f"the {what} rule does not name one port number per entry")
            if {p.get("protocol", "TCP") for p in ports} != protocols:
                problem(where, f"the {what} rule's protocols are not {sorted(protocols)}")
            for peer in rule.get("to") or []:
                if "ipBlock" not in peer and not peer.get("namespaceSelector", {}).get("matchLabels"):
                    problem(where, f"the {what} rule reaches every namespace")


def consistency(objs):
    deploys = by_kind(objs, "Deployment")
    services = by_kind(objs, "Service")
    cms = {o["metadata"]["name"]: o for o in by_kind(objs, "ConfigMap")}
    secrets = {o["metadata"]["name"]: o for o in by_kind(objs, "Secret")}
    if not deploys:
        problem("manifests", "no Deployment")
        return
    for name, cm in cms.items():
        known_variables(f"ConfigMap/{name}", (cm.get("data") or {}).keys())
    for name, secret in secrets.items():
        known_variables(f"Secret/{name}",
                        list((secret.get("data") or {}).keys()) + list((secret.get("stringData") or {}).keys()))
    for d in deploys:
        name = d["metadata"]["name"]
        tmpl = d["spec"]["template"]
        for c in tmpl["spec"]["containers"]:
            known_variables(f"Deployment/{name}", [e["name"] for e in c.get("env", [])])
        pod_labels = tmpl["metadata"].get("labels", {})
        if not matches(d["spec"]["selector"].get("matchLabels"), pod_labels):
            problem(f"Deployment/{name}", "selector does not match the pod labels")
        pod = tmpl["spec"]
        hardened(f"Deployment/{name}", pod)
        least_egress(objs, pod_labels)
        drain_budget(f"Deployment/{name}", pod, cms)
        memory_budget(f"Deployment/{name}", pod, cms)
        redis_password_from_secret(f"Deployment/{name}", pod, cms, secrets)
        if "replicas" in d["spec"] and any(
                h["spec"]["scaleTargetRef"].get("name") == name for h in by_kind(objs, "HorizontalPodAutoscaler")):
            problem(f"Deployment/{name}", "sets replicas while an HPA owns the count: re-applying resets it")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            where = f"Deployment/{name} container {c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if port is not None and port not in ports and port not in ports.values():
                    problem(where, f"{probe} port {port!r} is not a container port")
            for ef in c.get("envFrom", []):
                ref = ef.get("configMapRef") or {}
                if ref and ref["name"] not in cms:
                    problem(where, f"envFrom ConfigMap {ref['name']} is not defined here")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    s = secrets.get(ref["name"])
                    if s is None:
                        problem(where, f"env {e['name']}: Secret {ref['name']} is not defined here")
                    elif ref["key"] not in {**s.get("stringData", {}), **s.get("data", {})}:
                        problem(where, f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    problem(where, f"volumeMount {m['name']} has no volume")
        for v in volumes.values():
            sv = v.get("secret")
            if sv:
                s = secrets.get(sv["secretName"])
                if s is None:
                    problem(f"Deployment/{name}", f"volume {v['name']}: Secret {sv['secretName']} is not defined here")
                else:
                    keys = {**s.get("stringData", {}), **s.get("data", {})}
                    for item in sv.get("items", []):
                        if item["key"] not in keys:
                            problem(f"Deployment/{name}", f"volume {v['name']}: Secret has no key {item['key']}")
        for s in services:
            if matches(s["spec"].get("selector"), pod_labels):
                cports = {p.get("name") for c in pod["containers"] for p in c.get("ports", [])} | \
                    {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
                for p in s["spec"]["ports"]:
                    if p.get("targetPort", p["port"]) not in cports:
                        problem(f"Service/{s['metadata']['name']}", f"targetPort {p.get('targetPort')!r} is not a container port")
        if not any(matches(s["spec"].get("selector"), pod_labels) for s in services):
            problem(f"Deployment/{name}", "no Service selects its pods")
        for pdb in by_kind(objs, "PodDisruptionBudget"):
            if not matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
                problem(f"PodDisruptionBudget/{pdb['metadata']['name']}", "selector does not match the pods")
    deploy_names = {d["metadata"]["name"] for d in deploys}
    for hpa in by_kind(objs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in deploy_names:
            problem(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}", f"targets {ref['kind']}/{ref['name']}, not a Deployment here")
    svc_ports = {(s["metadata"]["name"], p.get("name")) for s in services for p in s["spec"]["ports"]} | \
        {(s["metadata"]["name"], p["port"]) for s in services for p in s["spec"]["ports"]}
    for ing in by_kind(objs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                svc = path["backend"]["service"]
                port = svc["port"].get("name", svc["port"].get("number"))
                if (svc["name"], port) not in svc_ports:
                    problem(f"Ingress/{ing['metadata']['name']}", f"backend {svc['name']}:{port} is not a Service port here")


def local_config(obj):
    """An object kustomize reads but does not deploy (egress.yaml)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get("config.kubernetes.io/local-config") == "true"


def generated_configmaps(d, k):
    """The ConfigMaps of the kustomization's configMapGenerator, from their
    env files (KEY=value lines, # comments)."""
    made = []
    for gen in k.get("configMapGenerator") or []:
        data = {}
        for env in gen.get("envs") or []:
            try:
                lines = (d / env).read_text().splitlines()
            except OSError as e:
                problem("kustomization.yaml", f"configMapGenerator {gen.get('name')}: {e}")
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    key, sep, value = line.partition("=")
                    if not sep:
                        problem(env, f"not KEY=value: {line!r}")
                    data[key] = value
        data.update(dict(lit.split("=", 1) for lit in gen.get("literals") or []))
        made.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return made


def rendered_checks(label, rdocs):
    """What only the render shows: the Deployment reads a ConfigMap whose
    name carries its content's hash (a config change rolls the pods), and
    the egress with egress.yaml's values in place."""
    cms = {o["metadata"]["name"] for o in rdocs if isinstance(o, dict) and o.get("kind") == "ConfigMap"}
    for dep in (o for o in rdocs if isinstance(o, dict) and o.get("kind") == "Deployment"):
        pod = dep["spec"]["template"]
        for c in pod["spec"]["containers"]:
            for ef in c.get("envFrom", []):
                ref = (ef.get("configMapRef") or {}).get("name")
                if ref and (ref not in cms or not re.search(r"-[a-z0-9]{10}$", ref)):
                    problem(label, f"envFrom ConfigMap {ref} is not a generated, content-hashed ConfigMap")
        least_egress([o for o in rdocs if isinstance(o, dict)], pod["metadata"].get("labels", {}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--rendered")
    ap.add_argument("--renderer", default="renderer")
    args = ap.parse_args()
    versions = os.environ.get("AMO_K8S_VERSIONS", "1.30.0 1.37.0").split()
    d = Path(args.dir)

    files = sorted(p for p in d.glob("*.yaml") if p.name != "kustomization.yaml")
    docs_of = {}
    n_objects = 0
    for f in files:
        docs = load_docs(f)
        docs_of[f.name] = docs
        n_objects += validate_docs(f.name, docs, versions)
        for doc in docs:
            if isinstance(doc, dict) and "namespace" in (doc.get("metadata") or {}):
                problem(f.name, f"{doc.get('kind')}/{doc['metadata'].get('name')} names a namespace; the base is namespace-agnostic")

    kpath = d / "kustomization.yaml"
    kdocs = load_docs(kpath)
    listed, generated = [], []
    if len(kdocs) != 1 or not isinstance(kdocs[0], dict):
        problem(kpath.name, "expected one YAML document")
    else:
        k = kdocs[0]
        if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
            problem(kpath.name, "apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
        if "namespace" in k:
            problem(kpath.name, "sets a namespace; the base is namespace-agnostic")
        listed = k.get("resources") or []
        generated = generated_configmaps(d, k)
        if not listed:
            problem(kpath.name, "lists no resources")
        for r in listed:
            if not (d / r).is_file():
                problem(kpath.name, f"resource {r} does not exist")
            elif r not in docs_of:
                problem(kpath.name, f"resource {r} is not a *.yaml file of {d}")

    # Consistency over what the kustomization deploys plus the example
    # Secret, which stands for the one the secret manager provides.
    # The generated ConfigMaps take their generator's name here (kustomize
    # adds the hash, and rewrites the references, when it renders).
    # ingress.yaml, not deployed by default, is checked against the rest too.
    objs = [o for r in listed for o in docs_of.get(r, []) if isinstance(o, dict) and not local_config(o)]
    objs += generated
    for optional in ("secret.example.yaml", "ingress.yaml"):
        objs += [o for o in docs_of.get(optional, []) if isinstance(o, dict)]
    if not problems:
        consistency(objs)

    rendered_note = ""
    if not args.rendered:
        problem(kpath.name, "not rendered: validate.sh passes --rendered (kubectl kustomize or kustomize)")
    else:
        rdocs = load_docs(args.rendered)
        n = validate_docs(f"{args.renderer} output", rdocs, versions)
        kinds = sorted({o.get("kind") for o in rdocs if isinstance(o, dict)})
        want = sorted({o.get("kind") for r in listed for o in docs_of.get(r, []) if isinstance(o, dict)}
                      | {o["kind"] for o in generated})
        rendered_checks(f"{args.renderer} output", rdocs)
        if kinds != want:
            problem(f"{args.renderer} output", f"kinds {kinds}, expected {want}")
        rendered_note = f"{args.renderer} rendered {n} objects, valid"

    if problems:
        for p in problems:
            print(f"validate.sh: INVALID: {p}", file=sys.stderr)
        print(f"validate.sh: FAILED, {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"validate.sh: OK: {n_objects} objects in {len(files)} files valid against Kubernetes "
          f"{', '.join(versions)} (strict); kustomization lists {len(listed)} resources; {rendered_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
