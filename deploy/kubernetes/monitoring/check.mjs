// deploy/kubernetes/monitoring/check.mjs — run by check.sh; see there.
// usage: node check.mjs REPO OUT_DIR
// Validates the ServiceMonitor and PrometheusRule against the Prometheus
// Operator's schemas (@kubernetes-models/prometheus-operator), checks that
// the rules speak of what the service has, and writes OUT_DIR/rules.yaml:
// the rule groups with annotations left out, for `promtool test rules`.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const [repo, out] = process.argv.slice(2);
const here = join(repo, "deploy/kubernetes/monitoring");
const problems = [];
const problem = (what) => problems.push(what);

// The kustomization lists exactly the manifests here.
const kustomization = yaml.load(readFileSync(join(here, "kustomization.yaml"), "utf8"));
const manifests = readdirSync(here).filter((f) => f.endsWith(".yaml") && !["kustomization.yaml", "rules.test.yaml"].includes(f)).sort();
const listed = [...kustomization.resources].sort();
if (JSON.stringify(manifests) !== JSON.stringify(listed)) {
  problem(`kustomization.yaml lists ${listed.join(", ")}; the manifests here are ${manifests.join(", ")}`);
}

// Each object against the Operator's schema (unknown fields are errors).
const kinds = { PrometheusRule, ServiceMonitor };
const objects = {};
for (const file of manifests) {
  for (const doc of yaml.loadAll(readFileSync(join(here, file), "utf8"))) {
    const Kind = kinds[doc?.kind];
    if (!Kind || doc.apiVersion !== "monitoring.coreos.com/v1") {
      problem(`${file}: ${doc?.apiVersion}/${doc?.kind} is not a monitoring.coreos.com/v1 ServiceMonitor or PrometheusRule`);
      continue;
    }
    try {
      new Kind(doc).validate();
    } catch (err) {
      problem(`${file}: ${err.message}`);
    }
    if (doc.metadata?.namespace) problem(`${file}: names a namespace; the base is namespace-agnostic`);
    objects[doc.kind] = doc;
  }
}

// The ServiceMonitor selects the base's Service, by its labels and port name.
const service = yaml.load(readFileSync(join(repo, "deploy/kubernetes/service.yaml"), "utf8"));
const monitor = objects.ServiceMonitor;
if (monitor) {
  for (const [key, value] of Object.entries(monitor.spec.selector.matchLabels ?? {})) {
    if (service.metadata.labels?.[key] !== value) problem(`servicemonitor.yaml: selects ${key}=${value}; the Service's label is ${service.metadata.labels?.[key]}`);
  }
  const ports = service.spec.ports.map((p) => p.name);
  for (const endpoint of monitor.spec.endpoints) {
    if (!ports.includes(endpoint.port)) problem(`servicemonitor.yaml: port ${endpoint.port} is not one of the Service's (${ports.join(", ")})`);
  }
}

// The rules speak of what the service has: metrics it declares, label
// values of routes in its spec, settings it reads, and the job the
// ServiceMonitor gives (the Service's name).
const metricsSource = readFileSync(join(repo, "src/metrics.rs"), "utf8");
const declaredMetrics = new Set([...metricsSource.matchAll(/"(amo_[a-z_]+)"/g)].map((m) => m[1]));
const settingsTable = readFileSync(join(repo, "docs/configuration.md"), "utf8");
const settings = new Set([...settingsTable.matchAll(/^\| `(AMO_[A-Z0-9_]+)`/gm)].map((m) => m[1]));
const routes = Object.keys(JSON.parse(readFileSync(join(repo, "openapi/openapi.json"), "utf8")).paths);
const sourceFiles = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".rs") ? [join(dir, e.name)] : []);
const literals = new Set(sourceFiles(join(repo, "src")).flatMap((f) => [...readFileSync(f, "utf8").matchAll(/"([a-z0-9_]+)"/g)].map((m) => m[1])));
const rule = objects.PrometheusRule;
let alerts = 0;
if (rule) {
  for (const group of rule.spec.groups) {
    for (const r of group.rules) {
      alerts += 1;
      const name = r.alert ?? r.record;
      for (const [, metric] of r.expr.matchAll(/\b(amo_[a-z_]+)/g)) {
        const base = metric.replace(/_(bucket|sum|count)$/, "");
        if (!declaredMetrics.has(base)) problem(`${name}: ${metric} is not a metric of src/metrics.rs`);
      }
      for (const [, op, pattern] of r.expr.matchAll(/\broute(=~|=)"([^"]*)"/g)) {
        const matches = op === "=" ? routes.filter((p) => p === pattern) : routes.filter((p) => new RegExp(`^(?:${pattern})$`).test(p));
        if (matches.length === 0) problem(`${name}: route${op}"${pattern}" matches no path of the spec`);
      }
      // Label values the code emits: each word of a matcher on these
      // labels is a string literal of src/.
      for (const [, label, op, value] of r.expr.matchAll(/\b(limit|reason|outcome|backend)(=~|=|!=|!~)"([^"]*)"/g)) {
        for (const word of value.split("|")) {
          if (!/^[a-z0-9_]+$/.test(word)) problem(`${name}: ${label}${op}"${value}": only plain alternatives of words are checked`);
          else if (!literals.has(word)) problem(`${name}: ${label} "${word}" is not a label value src/ emits`);
        }
      }
      for (const [, job] of r.expr.matchAll(/\bjob="([^"]*)"/g)) {
        if (job !== service.metadata.name) problem(`${name}: job="${job}" is not the Service's name ${service.metadata.name}`);
      }
      if (r.alert && !/\bjob="/.test(r.expr)) problem(`${name}: does not select job="${service.metadata.name}"`);
      const text = JSON.stringify(r.annotations ?? {});
      for (const [, setting] of text.matchAll(/\b(AMO_[A-Z0-9_]+)/g)) {
        if (!settings.has(setting)) problem(`${name}: ${setting} is not a setting of docs/configuration.md`);
      }
      if (r.alert && !(r.annotations?.summary && r.annotations?.description)) problem(`${name}: needs a summary and a description`);
      if (r.alert && !["critical", "warning", "info"].includes(r.labels?.severity)) problem(`${name}: severity must be critical, warning or info`);
    }
  }
  // Every alert has a unit test that shows it firing and one that shows it
  // quiet.
  const tests = yaml.load(readFileSync(join(here, "rules.test.yaml"), "utf8")).tests.flatMap((t) => t.alert_rule_test ?? []);
  for (const r of rule.spec.groups.flatMap((g) => g.rules).filter((r) => r.alert)) {
    const mine = tests.filter((t) => t.alertname === r.alert);
    if (!mine.some((t) => (t.exp_alerts ?? []).length > 0)) problem(`${r.alert}: rules.test.yaml never shows it firing`);
    if (!mine.some((t) => (t.exp_alerts ?? []).length === 0)) problem(`${r.alert}: rules.test.yaml never shows it quiet`);
  }
  const groups = rule.spec.groups.map((g) => ({ ...g, rules: g.rules.map(({ annotations, ...rest }) => rest) }));
  writeFileSync(join(out, "rules.yaml"), JSON.stringify({ groups }, null, 1));
  writeFileSync(join(out, "rules-full.yaml"), JSON.stringify({ groups: rule.spec.groups }, null, 1));
}

if (problems.length) {
  for (const p of problems) console.error(`check.mjs: ${p}`);
  process.exit(1);
}
console.log(`${manifests.length} objects valid against the Prometheus Operator's schemas; ${alerts} alerts speak of declared metrics, spec routes and settings`);
