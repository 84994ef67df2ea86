// The web console in headless Chromium (Debian's, driven by npm's playwright-core), as
// slipway/tests/browser.rs runs it: sign in, create a service from an example image,
// watch it deploy live, open it, read its logs and metrics, add a domain, set a secret,
// pause and resume, roll back, sign out. Screenshots go to $ARTIFACTS.
//
// Environment: CONSOLE (the console URL), TOKEN, IMAGE (the example's image), ARTIFACTS,
// CANARY (a secret value that must never appear on a page).
"use strict";

const { chromium } = require("playwright-core");
const fs = require("fs");
const path = require("path");

const CONSOLE = process.env.CONSOLE;
const TOKEN = process.env.TOKEN;
const IMAGE = process.env.IMAGE;
const ARTIFACTS = process.env.ARTIFACTS;
const CANARY = process.env.CANARY;
const BUILT = process.env.BUILT;
const STEP_MS = 90_000;

function fail(msg) {
  console.error(`browser test failed: ${msg}`);
  process.exitCode = 1;
  throw new Error(msg);
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function expectText(locator, text, what, timeout = STEP_MS) {
  try {
    await locator.filter({ hasText: text }).first().waitFor({ timeout });
  } catch (e) {
    fail(`${what}: never showed ${JSON.stringify(text)} (${e.message.split("\n")[0]})`);
  }
}

// Polls `check` from here (the page's CSP forbids evaluated functions) until it holds.
async function until(what, check) {
  const end = Date.now() + STEP_MS;
  while (Date.now() < end) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`${what}: not within ${STEP_MS} ms`);
}

(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    // Sign in (a wrong token first).
    await page.goto(CONSOLE);
    await page.getByTestId("token").fill("not-the-token");
    await page.getByTestId("signin-submit").click();
    await expectText(page.locator(".field-error"), "wrong token", "sign-in with a bad token");
    await page.getByTestId("token").fill(TOKEN);
    await page.getByTestId("signin-submit").click();
    await page.getByTestId("services").waitFor({ timeout: STEP_MS });
    await shot(page, "01-services-empty");

    // Create from the example image; a bad name first gets the API's message by the field.
    await page.getByTestId("nav-create").click();
    await page.getByTestId("create-name").fill("Bad_Name");
    await page.getByTestId("create-source").selectOption("image");
    await page.getByTestId("create-image").fill(IMAGE);
    await page.getByTestId("create-port").fill("8080");
    await page.locator("#cpu").selectOption("256");
    await page.locator("#memory").selectOption("512");
    await page.getByTestId("create-submit").click();
    await expectText(page.locator('[data-error-for="name"]'), "name", "the name's validation message");
    await shot(page, "02-create-error");
    await page.getByTestId("create-name").fill("site");
    await page.getByTestId("create-submit").click();

    // The deployment succeeds, live.
    await expectText(page.getByTestId("status"), "running", "the service's status");
    await expectText(page.getByTestId("deployments").locator("td"), "succeeded", "the deployments table");
    await expectText(page.getByTestId("activity"), "succeeded", "the live activity log");
    // The newest deployment's steps, in order, the last one its outcome.
    const steps = page.locator("ol.steps").first();
    await expectText(steps.locator("li"), "succeeded", "the deployment's steps");
    const stepTexts = await steps.locator("li").allTextContents();
    const at = (w) => stepTexts.findIndex((t) => t.includes(w));
    if (!(at("starting") >= 0 && at("health_checking") > at("starting") && at("succeeded") > at("health_checking")))
      fail(`the deployment's steps are not starting, health_checking, ..., succeeded: ${JSON.stringify(stepTexts)}`);
    await shot(page, "03-service-running");

    // Open its URL.
    const url = await page.getByTestId("service-url").getAttribute("href");
    const app = await context.newPage();
    const resp = await app.goto(url);
    if (!resp || resp.status() !== 200) fail(`the service's URL ${url} answered ${resp && resp.status()}`);
    for (let i = 0; i < 5; i++) await app.reload();
    await shot(app, "04-the-app");
    await app.close();

    // Its application logs (the example logs each request) and metrics.
    await expectText(page.getByTestId("app-logs"), "GET /", "the application logs");
    await page.getByTestId("log-search").fill("GET");
    await page.getByTestId("log-search").press("Enter");
    await expectText(page.getByTestId("app-logs"), "GET /", "a log search");
    await expectText(page.getByTestId("metrics-points"), "points at", "the metrics charts");
    const pts = await page.getByTestId("metrics-points").textContent();
    if (/^0 points/.test(pts)) {
      await page.waitForTimeout(11_000);
      const again = await page.getByTestId("metrics-points").textContent();
      if (/^0 points/.test(again)) fail(`no metrics points: ${again}`);
    }
    // The charts show the requests just made (not only empty points).
    const api = await page.evaluate(async () => {
      const r = await fetch("/v1/services/site/metrics?period=1h");
      const m = await r.json();
      return m.points.reduce((n, p) => n + p.requests, 0);
    });
    if (!(api > 0)) fail(`the metrics history holds no requests: ${api}`);
    // A search that rules lines out shows only what matches.
    await page.getByTestId("log-search").fill("favicon");
    await page.getByTestId("log-search").press("Enter");
    await expectText(page.getByTestId("app-logs"), "favicon", "a narrower log search");
    const shown = await page.getByTestId("app-logs").textContent();
    if (shown.split("\n").some((l) => l.trim() && !l.includes("favicon"))) fail(`the search kept other lines: ${shown}`);
    await shot(page, "05-logs-and-metrics");

    // A domain and a secret.
    await page.getByTestId("domain-input").fill("www.example.test");
    await page.getByTestId("domain-add").click();
    await expectText(page.locator("[data-domain]"), "pending", "the new domain");
    await expectText(page.locator("[data-domain]"), "_slipway-challenge.www.example.test", "the domain's records");
    await page.getByTestId("secret-name").fill("API_KEY");
    await page.getByTestId("secret-value").fill(CANARY);
    await page.getByTestId("secret-set").click();
    await expectText(page.getByTestId("secrets").locator("td"), "API_KEY", "the secret's name");
    if ((await page.content()).includes(CANARY)) fail("the secret's value is on the page");
    // Setting it deployed revision 2.
    await expectText(page.getByTestId("deployments").locator("tr"), "config", "the secret's revision");
    await expectText(page.getByTestId("status"), "running", "running again after the secret");
    await shot(page, "06-domain-and-secret");

    // Pause and resume.
    await page.getByTestId("pause").click();
    await expectText(page.getByTestId("status"), "paused", "the paused status");
    const paused = await context.newPage();
    const p = await paused.goto(url);
    if (!p || p.status() !== 503) fail(`a paused service answered ${p && p.status()}`);
    if (!(await paused.content()).includes("is paused")) fail("the paused page does not say so");
    await shot(paused, "07-paused-page");
    await paused.close();
    await page.getByTestId("resume").click();
    await expectText(page.getByTestId("status"), "running", "the resumed status");

    // Roll back to revision 1.
    await page.getByTestId("rollback-revision").selectOption("1");
    await page.getByTestId("rollback").click();
    await expectText(page.getByTestId("deployments").locator("tr").nth(1), "rollback", "the rollback deployment");
    await expectText(page.getByTestId("deployments").locator("tr").nth(1), "succeeded", "the rollback's outcome");
    await shot(page, "08-rolled-back");

    // Settings: a bad value gets the API's message by the form; a good one is saved.
    const settings = JSON.parse(await page.getByTestId("settings-json").inputValue());
    settings.scaling.max_size = 0;
    await page.getByTestId("settings-json").fill(JSON.stringify(settings));
    await page.getByTestId("settings-save").click();
    await expectText(page.getByTestId("settings-error"), "scaling.max_size", "the settings' validation message");
    settings.scaling.max_size = 3;
    await page.getByTestId("settings-json").fill(JSON.stringify(settings));
    const saved = page.waitForResponse((r) => r.request().method() === "PATCH" && r.url().endsWith("/v1/services/site"), { timeout: STEP_MS });
    await page.getByTestId("settings-save").click();
    const savedStatus = (await saved).status();
    if (savedStatus !== 200) fail(`saving the settings answered ${savedStatus}`);
    // Drawn again from the service after a reload: the saved value.
    await page.reload();
    await page.getByTestId("settings-json").waitFor({ timeout: STEP_MS });
    await until("the saved max_size shown after a reload", async () =>
      JSON.parse(await page.getByTestId("settings-json").inputValue()).scaling.max_size === 3);

    // A git service's build output, searchable.
    await page.goto(`${CONSOLE}#/s/${BUILT}`);
    await expectText(page.getByTestId("build-pick"), "succeeded", "the build list");
    await expectText(page.getByTestId("build-log"), "build-marker-42", "the build's output");
    await page.getByTestId("build-search").fill("build-marker");
    await expectText(page.getByTestId("build-log"), "line(s) holding", "a build log search");
    const blog = (await page.getByTestId("build-log").textContent()).split("\n").slice(1).filter((l) => l.trim());
    if (!blog.length || blog.some((l) => !l.includes("build-marker"))) fail(`the build search kept other lines: ${JSON.stringify(blog)}`);
    await shot(page, "10-build-log");
    // Deploy builds the branch head again: a new build shows up in the list.
    const before = await page.getByTestId("build-pick").locator("option").count();
    const deployed = page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/deploy"), { timeout: STEP_MS });
    await page.getByTestId("deploy").click();
    const deployStatus = (await deployed).status();
    if (deployStatus >= 300) fail(`Deploy answered ${deployStatus}`);
    await until("a new build in the list after Deploy", async () =>
      (await page.getByTestId("build-pick").locator("option").count()) > before);
    // Back on the first service: a log search by time range (the last 7 days hold its
    // requests' lines).
    await page.goto(`${CONSOLE}#/s/site`);
    await expectText(page.getByTestId("status"), "running", "back on the first service");
    await page.getByTestId("log-search").fill("GET");
    const asked = page.waitForRequest((r) => /\/logs\?.*since=\d+/.test(r.url()), { timeout: STEP_MS });
    await page.getByTestId("log-range").selectOption("604800");
    const since = Number(new URL((await asked).url()).searchParams.get("since"));
    if (Math.abs(Date.now() - 7 * 86400e3 - since) > 120e3) fail(`the 7-day range asked for lines since ${since}`);
    await expectText(page.getByTestId("app-logs"), "GET /", "a time-range log search");
    // A range that ends two days ago holds none of them.
    const ago = new Date(Date.now() - 2 * 86400e3);
    const pad = (n) => String(n).padStart(2, "0");
    const local = `${ago.getFullYear()}-${pad(ago.getMonth() + 1)}-${pad(ago.getDate())}T${pad(ago.getHours())}:${pad(ago.getMinutes())}`;
    const ended = page.waitForRequest((r) => /\/logs\?.*until=\d+/.test(r.url()), { timeout: STEP_MS });
    await page.getByTestId("log-until").fill(local);
    const untilAsked = Number(new URL((await ended).url()).searchParams.get("until"));
    if (Math.abs(ago.getTime() - untilAsked) > 120e3) fail(`the range's end asked for lines until ${untilAsked}`);
    await expectText(page.getByTestId("app-logs"), "No lines match", "a range that ends before the app ran");
    await page.getByTestId("log-until").fill("");
    await expectText(page.getByTestId("app-logs"), "GET /", "the range ending now again");

    // On a phone.
    await page.setViewportSize({ width: 390, height: 844 });
    await shot(page, "09-phone");
    await page.setViewportSize({ width: 1280, height: 900 });

    // Sign out.
    await page.getByTestId("signout").click();
    await page.getByTestId("signin").waitFor({ timeout: STEP_MS });
    await page.goto(CONSOLE);
    await page.getByTestId("signin").waitFor({ timeout: STEP_MS });
    if ((await page.content()).includes(CANARY)) fail("the secret's value is on a page");
    if (errors.length) fail(`script errors on the page: ${errors.join("; ")}`);
    console.log("browser test passed");
  } catch (e) {
    await shot(page, "99-failure").catch(() => {});
    if (!process.exitCode) {
      console.error(`browser test failed: ${e.message}`);
      process.exitCode = 1;
    }
  } finally {
    await browser.close();
  }
})();
