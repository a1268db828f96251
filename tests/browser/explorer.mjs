// The API explorer, as a person sees it: Debian's headless Chromium, driven by
// puppeteer-core, opens Swagger UI at $AMO_ENDPOINT/docs and checks that
//   1. the page renders one block for every operation of the served spec,
//      and shows no error (a failed spec load, a page script error);
//   2. "Try it out" on GET /api/v2/parcels/{id}/metadata, with the id of a
//      parcel that run.sh uploaded, shows that parcel's JSON (id, owner,
//      size) and the 200.
// It saves a screenshot of the page after step 2 (or at the failure) as
// $AMO_BROWSER_ARTIFACTS/explorer.png (and the whole page after step 1 as
// explorer-overview.png), and exits non-zero on any failure.
//
// Environment: AMO_ENDPOINT, AMO_PARCEL_ID, AMO_PARCEL_OWNER, AMO_PARCEL_SIZE
// (set by run.sh), AMO_BROWSER_ARTIFACTS (default target/browser),
// AMO_CHROMIUM (default /usr/bin/chromium).
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";

const endpoint = (process.env.AMO_ENDPOINT ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const parcelId = required("AMO_PARCEL_ID");
const owner = required("AMO_PARCEL_OWNER");
const size = Number(required("AMO_PARCEL_SIZE"));
const artifacts = path.resolve(process.env.AMO_BROWSER_ARTIFACTS ?? "target/browser");
const screenshot = path.join(artifacts, "explorer.png");
const INSPECT = { method: "get", path: "/api/v2/parcels/{id}/metadata" };

const steps = [];
function step(name) {
  steps.push(name);
  console.log(`--- ${name}`);
}
function check(condition, message) {
  if (!condition) {
    throw new Error(message);
  }
}
function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} must be set (run.sh sets it)`);
    process.exit(2);
  }
  return value;
}

/** Every operation of the spec the service serves, as "get /path". */
async function specOperations() {
  const response = await fetch(`${endpoint}/api/openapi.json`);
  check(response.ok, `GET /api/openapi.json answered ${response.status}`);
  const spec = await response.json();
  const methods = ["get", "put", "post", "delete", "patch", "head", "options"];
  return Object.entries(spec.paths).flatMap(([route, item]) =>
    Object.keys(item)
      .filter((key) => methods.includes(key))
      .map((method) => `${method} ${route}`),
  );
}

fs.mkdirSync(artifacts, { recursive: true });
const browser = await puppeteer.launch({
  executablePath: process.env.AMO_CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // Root in CI: Chromium's sandbox needs a user namespace it may not get.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
  defaultViewport: { width: 1280, height: 900 },
});
const pageErrors = [];
let status = 0;
let page;
try {
  page = await browser.newPage();
  page.on("pageerror", (err) => pageErrors.push(`page error: ${err.message}`));
  page.on("console", (message) => {
    // The browser asks for /favicon.ico on its own; the service has none.
    const url = message.location()?.url ?? "";
    if (message.type() === "error" && !url.endsWith("/favicon.ico")) {
      pageErrors.push(`console error: ${message.text()} (${url})`);
    }
  });

  step(`open ${endpoint}/docs`);
  const answer = await page.goto(`${endpoint}/docs`, { waitUntil: "networkidle0", timeout: 60_000 });
  check(answer !== null && answer.status() === 200, `GET /docs answered ${answer?.status()}`);
  await page.waitForSelector(".swagger-ui .opblock", { timeout: 30_000 });

  step("every operation of the spec is rendered, and no error is shown");
  const expected = await specOperations();
  const rendered = await page.$$eval(".swagger-ui .opblock", (blocks) =>
    blocks.map((block) => {
      const method = block.querySelector(".opblock-summary-method")?.textContent?.trim().toLowerCase() ?? "";
      const route = block.querySelector(".opblock-summary-path")?.getAttribute("data-path") ?? "";
      return `${method} ${route}`;
    }),
  );
  const missing = expected.filter((operation) => !rendered.includes(operation));
  check(expected.length > 0, "the served spec has no operations");
  check(missing.length === 0, `operations not rendered: ${missing.join(", ")} (rendered: ${rendered.join(", ")})`);
  console.log(`${rendered.length} operation blocks for ${expected.length} operations of the spec`);
  const title = await page.$eval(".swagger-ui .info .title", (node) => node.textContent ?? "");
  check(title.includes("AMO storage service"), `the page's title is ${JSON.stringify(title)}`);
  const shownErrors = await page.$$eval(
    ".swagger-ui .errors-wrapper, .swagger-ui .loading-container .errors",
    (nodes) => nodes.map((node) => node.textContent?.trim() ?? ""),
  );
  check(shownErrors.length === 0, `the page shows errors: ${shownErrors.join(" | ")}`);
  const text = await page.$eval("body", (body) => body.innerText);
  check(!/Failed to load API definition/i.test(text), "the page says it failed to load the API definition");
  await page.screenshot({ path: path.join(artifacts, "explorer-overview.png"), fullPage: true });

  step(`"Try it out" on ${INSPECT.method.toUpperCase()} ${INSPECT.path} with parcel ${parcelId}`);
  const block = await page.waitForSelector(
    `.swagger-ui .opblock-${INSPECT.method}:has(.opblock-summary-path[data-path="${INSPECT.path}"])`,
  );
  check(block !== null, "no block for the inspect operation");
  await block.$eval(".opblock-summary", (summary) => summary.scrollIntoView());
  await (await block.waitForSelector(".opblock-summary")).click();
  await (await block.waitForSelector("button.try-out__btn")).click();
  const input = await block.waitForSelector('tr[data-param-name="id"] input');
  // The field starts with the spec's example id: replace it.
  await input.click({ clickCount: 3 });
  await input.press("Backspace");
  await input.type(parcelId);
  await (await block.waitForSelector("button.execute")).click();
  const responseBody = await block.waitForSelector(".live-responses-table .response-col_description pre", {
    timeout: 30_000,
  });
  const shownStatus = await block.$eval(".live-responses-table .response .response-col_status", (node) =>
    node.textContent?.trim(),
  );
  const shown = await responseBody.evaluate((node) => node.textContent ?? "");
  console.log(`shown: HTTP ${shownStatus} ${shown.replace(/\s+/g, " ").slice(0, 200)}`);
  check(shownStatus === "200", `the explorer shows HTTP ${shownStatus}, not 200`);
  const parsed = JSON.parse(shown);
  check(parsed.id === parcelId, `the shown id is ${parsed.id}`);
  check(String(parsed.owner).toUpperCase() === owner.toUpperCase(), `the shown owner is ${parsed.owner}`);
  check(parsed.size === size, `the shown size is ${parsed.size}, uploaded ${size}`);
  check(parsed.metadata?.owner?.toUpperCase() === owner.toUpperCase(), "the shown metadata has no owner");
  await block.evaluate((node) => node.scrollIntoView());

  step("no page script error");
  check(pageErrors.length === 0, pageErrors.join("\n"));
} catch (err) {
  console.error(`FAILED at step '${steps.at(-1) ?? "start"}': ${err instanceof Error ? err.message : err}`);
  status = 1;
} finally {
  if (page) {
    try {
      await page.screenshot({ path: screenshot, fullPage: false });
      const bytes = fs.statSync(screenshot).size;
      console.log(`screenshot: ${screenshot} (${bytes} bytes)`);
    } catch (err) {
      console.error(`no screenshot: ${err instanceof Error ? err.message : err}`);
      status = 1;
    }
  }
  await browser.close();
}
if (status === 0) {
  console.log(`${steps.length} passed, 0 failed`);
}
process.exit(status);
