// The example page (examples/browser) in Debian's headless Chromium, driven
// by puppeteer-core, across origins (page.sh serves the page and the
// service, behind nginx, from two origins):
//   1. from the allowed origin: a key is made, the 24 MiB file is set on the
//      file input and uploaded, paused past 40 % and resumed; the parcel id
//      is read from the page; the stored bytes equal the file (checked
//      through the API, with a token the page's key signs); the page
//      downloads it and its SHA-256 matches; the page removes it (the API
//      then answers 404);
//   2. from an origin the service does not allow: the browser refuses (its
//      console says CORS) and the page shows the error.
// A screenshot of each state goes to $AMO_BROWSER_ARTIFACTS/page-*.png; the
// rates the page reached and Chromium's CPU and memory go to
// page-metrics.json. Fails on a blank page, a console error (but the CORS
// refusal expected in step 2), or any check.
//
// Environment (set by page.sh): AMO_PAGE_URL, AMO_FOREIGN_PAGE_URL,
// AMO_ENDPOINT (the service, through nginx), AMO_PAGE_FILE,
// AMO_BROWSER_ARTIFACTS, AMO_CHROMIUM.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import puppeteer from "puppeteer-core";

const required = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} must be set (page.sh sets it)`);
    process.exit(2);
  }
  return value;
};
const pageUrl = required("AMO_PAGE_URL");
const foreignUrl = required("AMO_FOREIGN_PAGE_URL");
const endpoint = required("AMO_ENDPOINT").replace(/\/+$/, "");
const filePath = required("AMO_PAGE_FILE");
const artifacts = path.resolve(process.env.AMO_BROWSER_ARTIFACTS ?? "target/browser");
const TIMEOUT = 180_000;

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok: ${message}`);
}

// --- Chromium's processes: CPU time and memory ------------------------------

const TICK = 100; // USER_HZ on Linux
/** The pids of `root` and its descendants. */
function tree(root) {
  const children = new Map();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  const pids = [root];
  for (let i = 0; i < pids.length; i++) pids.push(...(children.get(pids[i]) ?? []));
  return pids;
}
/** CPU seconds (user + system, children waited for included) and memory
 * of the tree under `root`: the sum of its proportional set sizes (PSS:
 * shared pages divided among the processes that share them). */
function usage(root) {
  let cpu = 0;
  let rss = 0;
  for (const pid of tree(root)) {
    try {
      const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
      cpu += (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / TICK;
      const pss = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
      rss += Number(pss?.[1] ?? 0) * 1024;
    } catch {
      // gone meanwhile
    }
  }
  return { cpu, rss };
}

// --- the run ----------------------------------------------------------------

fs.mkdirSync(artifacts, { recursive: true });
const file = fs.readFileSync(filePath);
const fileSha = createHash("sha256").update(file).digest("hex").toUpperCase();
const browser = await puppeteer.launch({
  executablePath: process.env.AMO_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // Root in CI: Chromium's sandbox needs a user namespace it may not get.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  defaultViewport: { width: 1100, height: 1100 },
});
const chromium = browser.process().pid;
let peakRss = 0;
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, usage(chromium).rss);
}, 100);

const errors = [];
let refusals = [];
let expectRefusal = false;
let page;
let shot = 0;
let status = 0;

/** A page that records its errors; in the refusal step, the CORS refusal
 * (and the failed load it causes) is expected rather than an error. */
async function open(url) {
  const opened = await browser.newPage();
  opened.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
  opened.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = message.text();
    if (expectRefusal && /CORS policy|net::ERR_FAILED/.test(text)) refusals.push(text);
    else errors.push(`console error: ${text}`);
  });
  await opened.goto(url, { waitUntil: "load" });
  return opened;
}

async function screenshot(name) {
  shot += 1;
  const file = path.join(artifacts, `page-${shot}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  // A blank page is a failure: the heading, the example notice and the
  // sections are there and visible.
  const text = await page.evaluate(() => document.body.innerText);
  check(text.includes("This is an example") && text.includes("Parcel id") && text.length > 400,
    `${name}: the page is rendered (screenshot ${path.relative(process.cwd(), file)})`);
  check(errors.length === 0, `${name}: no console or page error ${errors.join("; ")}`);
}

const state = (expected, timeout = TIMEOUT) =>
  page.waitForFunction((s) => document.body.dataset.state === s || document.body.dataset.state === "error",
    { timeout }, expected)
    .then(() => page.evaluate(() => [document.body.dataset.state, document.getElementById("error").textContent]))
    .then(([reached, error]) => check(reached === expected, `the page reaches "${expected}" ${error ? `(error: ${error})` : ""}`));
const text = (id) => page.$eval(`#${id}`, (el) => el.textContent);

async function signed(jwt) {
  const signature = await page.evaluate((t) => window.amoExample.sign(t), jwt);
  const { publicHex } = await page.evaluate(() => window.amoExample.account());
  return { "X-Auth-Token": jwt, "X-Public-Key": publicHex, "X-Signature": signature };
}
async function token(user, operation) {
  const res = await fetch(`${endpoint}/api/v2/auth`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, operation }),
  });
  check(res.status === 200, `/auth answers a ${operation.name} token`);
  return (await res.json()).token;
}

const metrics = { file_bytes: file.length };
try {
  // 1. The allowed origin.
  page = await open(`${pageUrl}?service=${encodeURIComponent(endpoint)}`);
  const requests = [];
  page.on("request", (request) => requests.push(request.method()));
  await state("ready");
  const address = await text("address");
  check(/^[0-9A-F]{40}$/.test(address), `the page shows an account address ${address}`);
  check(!(await page.$eval("#export", (b) => b.disabled)), "a new key offers its backup");
  await screenshot("ready");

  const before = usage(chromium);
  const started = performance.now();
  await (await page.$("#file")).uploadFile(filePath);
  // Until the pause, the browser sends at most 4 MiB/s (DevTools' network
  // throttling), so that the pause lands mid-way on any machine: unthrottled,
  // a fast one sent the last 60 % before the click took effect ("paused at
  // 100 %"). The upload rate in page-metrics.json includes this part.
  await page.emulateNetworkConditions({ download: -1, upload: 4 * 1048576, latency: 0 });
  await page.click("#upload");
  await state("uploading");
  await page.waitForFunction(() => document.getElementById("upload-progress").value >= 0.4, { timeout: TIMEOUT });
  await page.click("#pause");
  await state("paused");
  await page.emulateNetworkConditions(null);
  const pausedAt = await page.$eval("#upload-progress", (p) => p.value);
  check(pausedAt >= 0.4 && pausedAt < 1, `paused at ${(pausedAt * 100).toFixed(0)} %`);
  await screenshot("paused");
  const headsBefore = requests.filter((m) => m === "HEAD").length;
  await page.click("#resume");
  await state("uploaded");
  check(requests.filter((m) => m === "HEAD").length > headsBefore, "the resume asked HEAD where to go on");
  const id = await text("parcel-id");
  check(id.endsWith(fileSha), `the page shows the parcel id ${id}`);
  await screenshot("uploaded");

  // The stored bytes, through the API (the page's key signs the token).
  const meta = await (await fetch(`${endpoint}/api/v2/parcels/${id}/metadata`)).json();
  check(meta.owner === address && meta.size === file.length, "the parcel's owner and size");
  const jwt = await token(address, { name: "download", id });
  const stored = await fetch(`${endpoint}/api/v2/parcels/${id}`, { headers: await signed(jwt) });
  check(stored.status === 200, "the parcel downloads through the API");
  check(Buffer.from(await stored.arrayBuffer()).equals(file), "the stored bytes are the file's");

  await page.click("#download");
  await state("downloaded");
  check((await page.$eval("#download-status", (s) => s.dataset.match)) === "true",
    "the page's SHA-256 of the download matches the file's");
  const after = usage(chromium);
  await screenshot("downloaded");
  metrics.upload_mib_per_s = Number(await page.evaluate(() => document.body.dataset.uploadRate));
  metrics.download_mib_per_s = Number(await page.evaluate(() => document.body.dataset.downloadRate));
  metrics.chromium_cpu_seconds = Number((after.cpu - before.cpu).toFixed(2));
  metrics.wall_seconds = Number(((performance.now() - started) / 1000).toFixed(2));
  metrics.chromium_cpu_percent_of_one_core = Math.round((100 * metrics.chromium_cpu_seconds) / metrics.wall_seconds);
  metrics.chromium_peak_pss_mib = Math.round(peakRss / 1048576);
  metrics.js_heap_used_mib = Math.round((await page.metrics()).JSHeapUsedSize / 1048576);
  metrics.cores = os.cpus().length;

  await page.click("#remove");
  await state("removed");
  const gone = await fetch(`${endpoint}/api/v2/parcels/${id}/metadata`);
  check(gone.status === 404, "the parcel is gone (404)");
  await screenshot("removed");
  await page.close();

  // 2. An origin the service does not allow.
  expectRefusal = true;
  page = await open(`${foreignUrl}?service=${encodeURIComponent(endpoint)}`);
  await state("ready");
  await (await page.$("#file")).uploadFile(filePath);
  await page.click("#upload");
  await page.waitForFunction(() => document.body.dataset.state === "error", { timeout: TIMEOUT });
  const shown = await text("error");
  const origin = new URL(foreignUrl).origin;
  check(shown.includes(`does not allow this page's origin ${origin}`), `the page shows the refusal: ${shown}`);
  check(refusals.some((r) => r.includes("CORS policy")), `the browser refused on CORS: ${refusals[0]}`);
  await screenshot("refused");

  fs.writeFileSync(path.join(artifacts, "page-metrics.json"), `${JSON.stringify(metrics, null, 2)}\n`);
  console.log(`metrics: ${JSON.stringify(metrics)}`);
  console.log("OK: the example page uploaded with a pause and a resume, downloaded, removed, and was refused from a foreign origin");
} catch (err) {
  status = 1;
  console.error(`FAILED: ${err.message}`);
  if (errors.length) console.error(errors.join("\n"));
  if (page) {
    await page.screenshot({ path: path.join(artifacts, "page-failure.png"), fullPage: true }).catch(() => {});
  }
} finally {
  clearInterval(sampler);
  await browser.close();
}
process.exit(status);
