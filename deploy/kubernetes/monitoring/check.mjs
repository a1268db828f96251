// deploy/kubernetes/monitoring/check.mjs — run by check.sh; see there.
// usage: node check.mjs REPO OUT_DIR
// Validates the ServiceMonitor and PrometheusRule against the Prometheus
// Operator's schemas (@kubernetes-models/prometheus-operator), checks that
// the rules speak of what the service has, and writes OUT_DIR/rules.yaml:
// the rule groups with annotations left out, for `promtool test rules`,
// OUT_DIR/rules-full.yaml (the rules whole, for `promtool check rules`) and
// OUT_DIR/dashboard-rules.yaml (each query of dashboard.json as a recording
// rule, for `promtool check rules`).
//
// Every query, of the rules and of the dashboard, is read with the PromQL
// grammar (@prometheus-io/lezer-promql): it must parse, and each metric it
// selects must be one src/metrics.rs registers (with its label names), or
// one of the allow-lists below (the process collector, kube-state-metrics,
// Prometheus' `up`); each label it matches or groups by must be one of those
// metrics' labels. Every alert's runbook_url must be an anchor of
// docs/operations.md (GitHub's slugs of its headings).
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import yaml from "js-yaml";
import { parser } from "@prometheus-io/lezer-promql";
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
const declaredMetrics = new Set([...metricsSource.matchAll(/"(amo_[a-z0-9_]+)"/g)].map((m) => m[1]));
const settingsTable = readFileSync(join(repo, "docs/configuration.md"), "utf8");
const settings = new Set([...settingsTable.matchAll(/^\| `(AMO_[A-Z0-9_]+)`/gm)].map((m) => m[1]));
const routes = Object.keys(JSON.parse(readFileSync(join(repo, "openapi/openapi.json"), "utf8")).paths);
const sourceFiles = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".rs") ? [join(dir, e.name)] : []);
const literals = new Set(sourceFiles(join(repo, "src")).flatMap((f) => [...readFileSync(f, "utf8").matchAll(/"([a-z0-9_]+)"/g)].map((m) => m[1])));

// The metrics src/metrics.rs registers, with their label names: each
// "amo_..." literal of the METRICS initialiser, and the first label list
// (&[...]) after it and before the next one; a histogram's (built with
// HistogramOpts::new or histogram_vec) as
// _bucket (with le), _sum and _count.
const init = metricsSource.slice(metricsSource.indexOf("static METRICS"), metricsSource.indexOf("\n});", metricsSource.indexOf("static METRICS")));
const catalogue = new Map();
const found = [...init.matchAll(/"(amo_[a-z0-9_]+)"/g)];
found.forEach((m, i) => {
  const segment = init.slice(m.index, found[i + 1]?.index ?? init.length);
  const list = /&\[([^\]]*)\]/.exec(segment);
  const labels = list ? [...list[1].matchAll(/"([a-z_]+)"/g)].map((l) => l[1]) : [];
  const histogram = /(HistogramOpts::new\(|histogram_vec\(\s*&registry,)\s*$/.test(init.slice(0, m.index));
  if (histogram) {
    catalogue.set(`${m[1]}_bucket`, { labels: [...labels, "le"], from: "src" });
    catalogue.set(`${m[1]}_sum`, { labels, from: "src" });
    catalogue.set(`${m[1]}_count`, { labels, from: "src" });
  } else {
    catalogue.set(m[1], { labels, from: "src" });
  }
});
for (const metric of declaredMetrics) {
  if (!catalogue.has(metric) && !catalogue.has(`${metric}_bucket`)) problem(`src/metrics.rs: ${metric} is declared outside the METRICS initialiser, or check.mjs misread it`);
}
// Labels Prometheus adds to every series it scrapes from a ServiceMonitor's
// target (the Operator's relabelling), and the job it gives.
const targetLabels = ["job", "instance", "namespace", "pod", "service", "container", "endpoint"];
// Allow-lists: what src/ does not declare by name. `pending`: a metric
// being added to src/ by other work, with its labels and values; where
// src/metrics.rs declares it, its labels there win and the entry is
// unused (drop it then). None now: amo_backend_calls_total is in src/.
const pending = {};
// The prometheus crate's process collector (no labels of its own).
const processCollector = ["process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_resident_memory_bytes",
  "process_virtual_memory_bytes", "process_start_time_seconds", "process_threads"];
// kube-state-metrics (v2) series, with their labels, and Prometheus' up.
const kubeStateMetrics = {
  kube_pod_status_ready: ["namespace", "pod", "uid", "condition"],
  kube_pod_status_phase: ["namespace", "pod", "uid", "phase"],
  kube_pod_container_status_restarts_total: ["namespace", "pod", "uid", "container"],
  kube_pod_container_status_last_terminated_reason: ["namespace", "pod", "uid", "container", "reason"],
  kube_pod_container_resource_limits: ["namespace", "pod", "uid", "container", "node", "resource", "unit"],
  kube_pod_container_resource_requests: ["namespace", "pod", "uid", "container", "node", "resource", "unit"],
  kube_deployment_status_replicas_available: ["namespace", "deployment"],
  kube_deployment_spec_replicas: ["namespace", "deployment"],
  kube_poddisruptionbudget_status_current_healthy: ["namespace", "poddisruptionbudget"],
  kube_poddisruptionbudget_status_desired_healthy: ["namespace", "poddisruptionbudget"],
  kube_poddisruptionbudget_status_expected_pods: ["namespace", "poddisruptionbudget"],
};
const unusedPending = new Set();
for (const [metric, entry] of Object.entries(pending)) {
  if (catalogue.has(metric)) unusedPending.add(metric);
  else catalogue.set(metric, { labels: entry.labels, values: entry.values, from: "pending" });
}
for (const metric of processCollector) catalogue.set(metric, { labels: [], from: "process" });
for (const [metric, labels] of Object.entries(kubeStateMetrics)) catalogue.set(metric, { labels: ["job", "instance", ...labels], from: "kube-state-metrics", own: true });
catalogue.set("up", { labels: [], from: "prometheus" });
const labelsOf = (metric) => {
  const entry = catalogue.get(metric);
  return entry.own ? entry.labels : [...targetLabels, ...entry.labels];
};

// GitHub's anchors of docs/operations.md's headings (as tests/docs/check_links.py makes them).
const anchors = new Set();
{
  const text = readFileSync(join(repo, "docs/operations.md"), "utf8").replace(/^(```|~~~)[\s\S]*?^\1/gm, "");
  const seen = new Map();
  for (const [, heading] of text.matchAll(/^#{1,6}\s+(.*?)\s*#*\s*$/gm)) {
    const plain = heading.replace(/\[([^\]]*)\]\([^)]*\)/g, "$1");
    const slug = plain.toLowerCase().replaceAll("`", "").replace(/[^\p{L}\p{N}_\- ]/gu, "").replaceAll(" ", "-");
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
}

// Grafana's variables, as promtool and the grammar can read them: the
// interval ones a duration, the others a regex.
const grafanaFree = (expr) =>
  expr.replace(/\$\{?(__rate_interval|__interval|__range)\}?/g, "5m").replace(/\$\{(\w+)(:\w+)?\}|\$(\w+)/g, ".*");

// Reads one query: it must parse; each selector names a known metric and
// its labels, selects this service (job="amo-storage", or the Deployment's
// objects by name for kube-state-metrics), and matches label values src/
// emits; each label it groups or matches on is a label of a metric it names.
const deployment = yaml.load(readFileSync(join(repo, "deploy/kubernetes/deployment.yaml"), "utf8")).metadata.name;
const valueLabels = ["limit", "reason", "outcome", "backend", "resource", "state"];
function checkQuery(name, raw) {
  const expr = grafanaFree(raw);
  const tree = parser.parse(expr);
  const text = (n) => expr.slice(n.from, n.to);
  const selectors = [];
  const grouping = [];
  let broken = false;
  tree.iterate({
    enter(n) {
      if (n.type.isError) broken = true;
      if (n.name === "VectorSelector") {
        const node = n.node;
        const ident = node.getChild("Identifier");
        const matchers = [];
        const list = node.getChild("LabelMatchers");
        for (let m = list?.firstChild; m; m = m.nextSibling) {
          if (!/LabelMatcher$/.test(m.name)) continue;
          const label = m.getChild("LabelName");
          const op = m.getChild("MatchOp");
          const value = m.getChild("StringLiteral");
          if (label && op && value) matchers.push({ label: text(label), op: text(op), value: JSON.parse(text(value).replace(/^'(.*)'$/, '"$1"')) });
          else broken = true;
        }
        let metric = ident ? text(ident) : matchers.find((m) => m.label === "__name__" && m.op === "=")?.value;
        selectors.push({ metric, matchers });
      }
      if (n.name === "GroupingLabels") {
        for (let l = n.node.firstChild; l; l = l.nextSibling) if (l.name === "LabelName") grouping.push(text(l));
      }
    },
  });
  if (broken) { problem(`${name}: the query does not parse: ${raw}`); return; }
  const named = new Set();
  for (const { metric, matchers } of selectors) {
    if (!metric || !catalogue.has(metric)) { problem(`${name}: ${metric ?? "a selector without a metric name"} is not a metric src/ emits (src/metrics.rs) nor one of check.mjs's allow-lists`); continue; }
    named.add(metric);
    const entry = catalogue.get(metric);
    const labels = labelsOf(metric);
    for (const { label, op, value } of matchers) {
      if (label === "__name__") continue;
      if (!labels.includes(label)) { problem(`${name}: ${metric} has no label ${label} (its labels: ${labels.join(", ")})`); continue; }
      if (entry.from === "kube-state-metrics") continue;
      if (label === "route") {
        const matches = op === "=" ? routes.filter((p) => p === value) : op === "=~" ? routes.filter((p) => new RegExp(`^(?:${value})$`).test(p)) : routes;
        if (matches.length === 0) problem(`${name}: route${op}"${value}" matches no path of the spec`);
      }
      if (label === "job" && value !== service.metadata.name) problem(`${name}: job="${value}" is not the Service's name ${service.metadata.name}`);
      if (valueLabels.includes(label)) {
        for (const word of value.split("|")) {
          if (!/^[a-z0-9_]+$/.test(word)) problem(`${name}: ${label}${op}"${value}": only plain alternatives of words are checked`);
          else if (!(literals.has(word) || entry.values?.[label]?.includes(word))) problem(`${name}: ${label} "${word}" is not a label value src/ emits`);
        }
      }
    }
    // It selects this service: by job, or the Deployment's objects by name.
    if (entry.from === "kube-state-metrics") {
      const ours = matchers.some(({ label, op, value }) =>
        (["container", "deployment", "poddisruptionbudget"].includes(label) && op === "=" && value === deployment) ||
        (label === "pod" && op === "=~" && value.startsWith(`${deployment}-`)));
      if (!ours) problem(`${name}: ${metric} does not select the Deployment's objects (container, deployment or poddisruptionbudget="${deployment}", or pod=~"${deployment}-...")`);
    } else if (!matchers.some(({ label, op, value }) => label === "job" && op === "=" && value === service.metadata.name)) {
      problem(`${name}: ${metric} does not select job="${service.metadata.name}"`);
    }
  }
  const known = new Set([...named].flatMap(labelsOf));
  for (const label of grouping) if (!known.has(label)) problem(`${name}: groups or matches by ${label}, a label of none of ${[...named].join(", ")}`);
}

const rule = objects.PrometheusRule;
let alerts = 0;
if (rule) {
  for (const group of rule.spec.groups) {
    for (const r of group.rules) {
      alerts += 1;
      const name = r.alert ?? r.record;
      checkQuery(name, r.expr);
      if (r.alert) {
        const url = r.annotations?.runbook_url;
        const m = /^docs\/operations\.md#([^#\s]+)$/.exec(url ?? "");
        if (!m) problem(`${name}: runbook_url ${url} is not docs/operations.md#ANCHOR`);
        else if (!anchors.has(m[1])) problem(`${name}: runbook_url ${url}: docs/operations.md has no heading with that anchor`);
      }
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


// The dashboard: valid JSON with its datasource a variable; each query of
// each panel (and each variable's label_values) read as the rules' are,
// and written out for `promtool check rules`.
const dashboard = JSON.parse(readFileSync(join(here, "dashboard.json"), "utf8"));
const panels = (list) => (list ?? []).flatMap((p) => [p, ...panels(p.panels)]);
const queries = [];
const ids = new Set();
for (const panel of panels(dashboard.panels)) {
  if (ids.has(panel.id)) problem(`dashboard.json: panel id ${panel.id} twice`);
  ids.add(panel.id);
  if (panel.type === "row") continue;
  if (panel.datasource?.uid !== "${datasource}") problem(`dashboard.json: panel "${panel.title}" does not use the datasource variable`);
  if (!(panel.targets ?? []).length) problem(`dashboard.json: panel "${panel.title}" has no query`);
  for (const target of panel.targets ?? []) queries.push({ name: `dashboard.json "${panel.title}" ${target.refId}`, expr: target.expr });
}
for (const variable of dashboard.templating?.list ?? []) {
  if (variable.type !== "query") continue;
  const query = typeof variable.query === "string" ? variable.query : variable.query?.query;
  const m = /^label_values\((.*),\s*([a-zA-Z_]\w*)\)$/.exec(query ?? "");
  if (!m) { problem(`dashboard.json: variable ${variable.name}: ${query} is not label_values(SELECTOR, LABEL)`); continue; }
  queries.push({ name: `dashboard.json variable ${variable.name}`, expr: `count by (${m[2]}) (${m[1]})` });
}
for (const { name, expr } of queries) checkQuery(name, expr);
writeFileSync(join(out, "dashboard-rules.yaml"), JSON.stringify({
  groups: [{ name: "dashboard.json", rules: queries.map(({ expr }, i) => ({ record: `dashboard_query_${i + 1}`, expr: grafanaFree(expr) })) }],
}, null, 1));

if (problems.length) {
  for (const p of problems) console.error(`check.mjs: ${p}`);
  process.exit(1);
}
for (const metric of unusedPending) console.error(`check.mjs: note: src/metrics.rs now declares ${metric}: drop it from the pending allow-list`);
console.log(`${manifests.length} objects valid against the Prometheus Operator's schemas; ${alerts} alerts and ${queries.length} dashboard queries parse and name only metrics and labels src/ emits (or allow-listed: ${Object.keys(pending).filter((m) => !unusedPending.has(m)).join(", ") || "none"} pending in src/, the process collector, kube-state-metrics); every runbook_url anchor exists`);
