// deploy/kubernetes/gateway-api/check.mjs — run by check.sh; see there.
// usage: node check.mjs REPO [RENDERED]
// Validates gateway.yaml's Gateway and HTTPRoutes (and, given RENDERED, the
// Gateway API objects of a kustomize render) against the Gateway API's
// schemas (@kubernetes-models/gateway-api), then checks what the schemas
// cannot: the routes hang on the Gateway here and send to the Service's
// port; every method and path of the API (openapi/openapi.json) meets
// exactly one rule, and no probe, /metrics or /docs meets any; every rule
// disables the whole-request timeout (long transfers); no route carries a
// retry for a write (POST, PATCH, DELETE).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import { Gateway, HTTPRoute } from "@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1";

const [repo, rendered] = process.argv.slice(2);
const base = join(repo, "deploy/kubernetes");
const problems = [];
const problem = (what) => problems.push(what);
const kinds = { Gateway, HTTPRoute };
const GROUP = "gateway.networking.k8s.io/";

function validated(label, docs) {
  const objects = [];
  for (const doc of docs) {
    if (!doc?.apiVersion?.startsWith(GROUP)) continue;
    const Kind = kinds[doc.kind];
    if (!Kind || doc.apiVersion !== `${GROUP}v1`) {
      problem(`${label}: ${doc.apiVersion} ${doc.kind} is not a ${GROUP}v1 Gateway or HTTPRoute`);
      continue;
    }
    try {
      new Kind(doc).validate();
    } catch (err) {
      problem(`${label}: ${doc.kind}/${doc.metadata?.name}: ${err.message}`);
    }
    objects.push(doc);
  }
  return objects;
}

const objects = validated("gateway.yaml", yaml.loadAll(readFileSync(join(base, "gateway.yaml"), "utf8")));
const gateways = objects.filter((o) => o.kind === "Gateway");
const routes = objects.filter((o) => o.kind === "HTTPRoute");
if (gateways.length !== 1 || routes.length === 0) problem(`gateway.yaml: ${gateways.length} Gateways and ${routes.length} HTTPRoutes; expected 1 and some`);

// The routes hang on the Gateway and send to the Service's port.
const service = yaml.load(readFileSync(join(base, "service.yaml"), "utf8"));
const servicePorts = service.spec.ports.map((p) => p.port);
const listeners = new Set((gateways[0]?.spec.listeners ?? []).map((l) => l.name));
for (const route of routes) {
  const name = `HTTPRoute/${route.metadata.name}`;
  for (const parent of route.spec.parentRefs ?? []) {
    if (parent.name !== gateways[0]?.metadata.name || (parent.sectionName && !listeners.has(parent.sectionName))) {
      problem(`${name}: parentRef ${parent.name}/${parent.sectionName} is not the Gateway's listener here`);
    }
  }
  for (const rule of route.spec.rules) {
    for (const ref of rule.backendRefs ?? []) {
      if (ref.name !== service.metadata.name || !servicePorts.includes(ref.port)) {
        problem(`${name}: backendRef ${ref.name}:${ref.port} is not the Service's port (${servicePorts.join(", ")})`);
      }
    }
    if (rule.timeouts?.request !== "0s") problem(`${name}: a rule's timeouts.request is ${rule.timeouts?.request}, not 0s (long transfers)`);
  }
}

// Which rules a request meets (Exact and PathPrefix by path element).
function meets(method, path) {
  const found = [];
  for (const route of routes) {
    route.spec.rules.forEach((rule, i) => {
      const hit = (rule.matches ?? [{}]).some((m) => {
        if (m.method && m.method !== method) return false;
        const { type = "PathPrefix", value = "/" } = m.path ?? {};
        if (type === "Exact") return path === value;
        if (type === "PathPrefix") return path === value || path.startsWith(value.endsWith("/") ? value : `${value}/`);
        problem(`HTTPRoute/${route.metadata.name}: path match ${type} is not checked here`);
        return false;
      });
      if (hit) found.push({ route, rule, label: `${route.metadata.name} rule ${i}` });
    });
  }
  return found;
}

const WRITES = new Set(["POST", "PATCH", "DELETE", "PUT"]);
const spec = JSON.parse(readFileSync(join(repo, "openapi/openapi.json"), "utf8"));
let routed = 0;
for (const [template, operations] of Object.entries(spec.paths)) {
  const path = template.replace(/\{[^}]+\}/g, "x");
  for (const method of Object.keys(operations).map((m) => m.toUpperCase())) {
    const found = meets(method, path);
    if (!template.startsWith("/api/")) {
      if (found.length) problem(`${method} ${template} is routed (${found[0].label}); only /api is public`);
      continue;
    }
    if (found.length !== 1) {
      problem(`${method} ${template} meets ${found.length} rules (${found.map((f) => f.label).join(", ")}); expected 1`);
      continue;
    }
    routed++;
    if (WRITES.has(method) && found[0].rule.retry) problem(`${method} ${template}: ${found[0].label} retries a write`);
  }
}
for (const path of ["/metrics", "/docs", "/healthz", "/readyz", "/status/backends"]) {
  if (meets("GET", path).length) problem(`GET ${path} is routed; it must stay inside the cluster`);
}

let renderedNote = "";
if (rendered) {
  const rdocs = yaml.loadAll(readFileSync(rendered, "utf8"));
  const robjects = validated("rendered", rdocs);
  if (robjects.length !== objects.length) problem(`the render holds ${robjects.length} Gateway API objects; gateway.yaml has ${objects.length}`);
  renderedNote = `; the render's ${robjects.length} valid too`;
}

if (problems.length) {
  for (const p of problems) console.error(`gateway-api check: INVALID: ${p}`);
  console.error(`gateway-api check: FAILED, ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`gateway-api check: OK: ${gateways.length} Gateway and ${routes.length} HTTPRoutes valid against the Gateway API v1 schemas; ` +
  `${routed} API operations each meet one rule, writes never retried, no probe or /metrics routed${renderedNote}`);
