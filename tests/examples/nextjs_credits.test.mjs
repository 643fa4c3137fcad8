// The example Next.js app in a real browser, against the real suite with the Stripe stand-in.
//
//   node --test tests/examples/      (scripts/test.sh runs it after `npm ci` and `next build`)
//
// It starts `scripts/suite.py --stripe-stand-in` (ledger, gateway and stand-in as real processes, on
// free ports, with a run folder of its own (CREDITS_RUN_DIR: its own lock, and a fresh embedded database
// unless DATABASE_URL is set), then
// `next start` twice: without DEV_SIGN_IN to check that the development sign-in is fenced off, and
// with it for the purchase. Debian's Chromium is driven by playwright-core. Each state a person sees
// is saved as a screenshot in the artifacts folder printed at the start (NEXTJS_TEST_ARTIFACTS, or
// artifacts/nextjs-example/ in the repository).
//
// Environment: CHROMIUM (default /usr/bin/chromium), PYTHON (default .venv/bin/python).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const APP_DIR = join(ROOT, "examples", "nextjs");
const { chromium } = createRequire(join(APP_DIR, "package.json"))("playwright-core");

const ARTIFACTS_DIR = process.env.NEXTJS_TEST_ARTIFACTS ?? join(ROOT, "artifacts", "nextjs-example");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PYTHON = process.env.PYTHON_FOR_TESTS ?? join(ROOT, ".venv", "bin", "python");
// Flags for a machine without a display, running as root, with its network closed: without the
// background-networking ones Chromium's own connections are refused and it stalls.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const START_WAIT_MS_MAX = 120_000; // The embedded database's first start runs initdb and the migrations.
const POLL_INTERVAL_MS = 250;
const STATE_WAIT_MS_MAX = 30_000; // A bound on waiting for a page state, not a timing assertion.
const STOP_WAIT_MS_MAX = 20_000;
const RATE_LIMIT_PER_USER_PER_MINUTE = 60;
const RATE_LIMIT_ATTEMPTS_MAX = RATE_LIMIT_PER_USER_PER_MINUTE * 3;

const secrets = {
  jwt: randomBytes(32).toString("hex"),
  webhook: `whsec_${randomBytes(24).toString("hex")}`,
  stripeKey: `sk_test_${randomBytes(12).toString("hex")}`,
  session: randomBytes(32).toString("hex"),
};
const runId = randomBytes(4).toString("hex");
// The seed's packs, the small one valid for a year: its purchase shows "100 credits expire on <date>".
const CREDIT_PACKAGES = JSON.stringify({
  small: { credits: 100, amount_minor: 500, currency: "eur", valid_days: 365 },
  medium: { credits: 550, amount_minor: 2500, currency: "eur" },
  large: { credits: 1200, amount_minor: 5000, currency: "eur" },
});
const children = [];
let ports;
let suite;
let browser;
let screenshotCount = 0;

// --- processes -------------------------------------------------------------------------------------

async function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function startProcess(name, command, args, options) {
  const log = join(ARTIFACTS_DIR, `${name}.log`);
  const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"], detached: false });
  const stream = createWriteStream(log);
  child.stdout.pipe(stream);
  child.stderr.pipe(stream);
  child.exited = new Promise((resolveExit) => child.on("exit", (code, signal) => resolveExit({ code, signal })));
  child.logPath = log;
  children.push(child);
  return child;
}

async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const stopped = await Promise.race([child.exited, sleep(STOP_WAIT_MS_MAX).then(() => null)]);
  if (stopped === null) {
    child.kill("SIGKILL");
    await child.exited;
  }
}

const sleep = (ms) => new Promise((resolveSleep) => setTimeout(resolveSleep, ms));

async function waitFor(description, probe, child) {
  const deadline = Date.now() + START_WAIT_MS_MAX;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${description}: the process exited; its log:\n${readFileSync(child.logPath, "utf8").slice(-4000)}`);
    }
    if (await probe().catch(() => false)) return;
    await sleep(POLL_INTERVAL_MS);
  }
  throw new Error(`${description} did not happen within ${START_WAIT_MS_MAX / 1000} s`);
}

function startSuite() {
  const env = {
    ...process.env,
    LEDGER_LISTEN: `127.0.0.1:${ports.ledger}`,
    GATEWAY_LISTEN: `127.0.0.1:${ports.gateway}`,
    STRIPE_STAND_IN_LISTEN: `127.0.0.1:${ports.standIn}`,
    STRIPE_API_KEY: secrets.stripeKey,
    STRIPE_WEBHOOK_SECRET: secrets.webhook,
    JWT_SECRET: secrets.jwt,
    JWT_AUDIENCE: "credits",
    CHECKOUT_SUCCESS_URL: `${appUrl()}/credits?checkout=success&session_id={CHECKOUT_SESSION_ID}`,
    CHECKOUT_CANCEL_URL: `${appUrl()}/credits?checkout=cancelled`,
    RATE_LIMIT_PER_USER_PER_MINUTE: String(RATE_LIMIT_PER_USER_PER_MINUTE),
    RATE_LIMIT_PER_IP_PER_MINUTE: "100000", // Every request comes from the app's one address.
    LEDGER_WORKERS: "1",
    CREDIT_PACKAGES,
    CREDITS_RUN_DIR: runDir,
  };
  return startProcess("suite", PYTHON, ["scripts/suite.py", "--stripe-stand-in"], { cwd: ROOT, env });
}

async function startApp(name, extraEnv) {
  const env = {
    ...process.env,
    NODE_ENV: "production",
    NEXT_TELEMETRY_DISABLED: "1",
    CREDITS_GATEWAY_URL: `http://127.0.0.1:${ports.gateway}`,
    DEV_JWT_SECRET: secrets.jwt,
    DEV_JWT_AUDIENCE: "credits",
    DEV_SESSION_SECRET: secrets.session,
    CREDIT_PACKAGES,
    ...extraEnv,
  };
  if (!("DEV_SIGN_IN" in extraEnv)) delete env.DEV_SIGN_IN;
  const next = join(APP_DIR, "node_modules", ".bin", "next");
  const app = startProcess(name, next, ["start", "--port", String(ports.app), "--hostname", "127.0.0.1"], { cwd: APP_DIR, env });
  await waitFor(`${name} answering`, async () => (await fetch(`${appUrl()}/sign-in`)).ok, app);
  return app;
}

const appUrl = () => `http://127.0.0.1:${ports.app}`;
const standInUrl = () => `http://127.0.0.1:${ports.standIn}`;
const gatewayUrl = () => `http://127.0.0.1:${ports.gateway}`;

// --- Stripe stand-in and tokens --------------------------------------------------------------------

async function standIn(method, path, body, contentType = "application/x-www-form-urlencoded") {
  const response = await fetch(`${standInUrl()}${path}`, {
    method,
    headers: { Authorization: `Bearer ${secrets.stripeKey}`, "Content-Type": contentType },
    body,
  });
  const json = await response.json();
  assert.equal(response.status, 200, `${method} ${path}: ${JSON.stringify(json)}`);
  return json;
}

const pauseDeliveries = (paused) => standIn("POST", "/_stand_in/deliveries", JSON.stringify({ paused }), "application/json");

function hmacBase64url(key, text) {
  return createHmac("sha256", key).update(text).digest("base64url");
}

function userJwt(userId, roles = undefined) {
  const nowSeconds = Math.floor(Date.now() / 1000);
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const claims = { sub: userId, aud: "credits", exp: nowSeconds + 300, ...(roles ? { roles } : {}) };
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${unsigned}.${hmacBase64url(secrets.jwt, unsigned)}`;
}

// What the app's dev sign-in would set (lib/dev-sign-in.ts), signed with the same secret: a cookie
// that would be valid if the development sign-in were on.
function devSessionCookie(userId) {
  const payload = `${Buffer.from(userId).toString("base64url")}.${Math.floor(Date.now() / 1000) + 3600}`;
  return `${payload}.${hmacBase64url(secrets.session, payload)}`;
}

// --- browser helpers -------------------------------------------------------------------------------

async function screenshot(page, name) {
  screenshotCount += 1;
  const file = join(ARTIFACTS_DIR, `${String(screenshotCount).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

async function waitForState(page, state, { reload = false } = {}) {
  const selector = `[data-state="${state}"]`;
  if (!reload) {
    await page.locator(selector).waitFor({ timeout: STATE_WAIT_MS_MAX });
    return;
  }
  const deadline = Date.now() + STATE_WAIT_MS_MAX;
  while (!(await page.locator(selector).count())) {
    assert.ok(Date.now() < deadline, `the page never showed ${state}`);
    await sleep(POLL_INTERVAL_MS * 2);
    await page.reload();
  }
}

async function signIn(page, userId) {
  await page.goto(`${appUrl()}/sign-in`);
  await page.getByTestId("user-id").fill(userId);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(`${appUrl()}/credits`);
}

const balance = (page) => page.getByTestId("balance").textContent();

// --- the run ---------------------------------------------------------------------------------------

// The suite's own folder for this run: a suite a developer runs from var/ is neither refused nor touched.
const runDir = mkdtempSync(join(tmpdir(), "credits-nextjs-test-"));

before(async () => {
  assert.ok(existsSync(join(APP_DIR, ".next", "BUILD_ID")), "build the app first: cd examples/nextjs && npm ci && npx next build");
  rmSync(ARTIFACTS_DIR, { recursive: true, force: true });
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  console.log(`# screenshots and logs: ${ARTIFACTS_DIR}`);
  ports = { ledger: await freePort(), gateway: await freePort(), standIn: await freePort(), app: await freePort() };
  suite = startSuite();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  await waitFor("the gateway ready", async () => (await fetch(`${gatewayUrl()}/readyz`)).ok, suite);
  await waitFor("the Stripe stand-in answering", async () => (await fetch(`${standInUrl()}/v1/charges`)).status === 401, suite);
});

after(async () => {
  await browser?.close();
  for (const child of children.reverse()) await stopProcess(child);
  rmSync(runDir, { recursive: true, force: true });
  console.log(`# ${readdirSync(ARTIFACTS_DIR).filter((name) => name.endsWith(".png")).length} screenshots in ${ARTIFACTS_DIR}`);
});

test("the development sign-in is fenced off unless DEV_SIGN_IN=1", async () => {
  const app = await startApp("next-without-dev-sign-in", {});
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${appUrl()}/sign-in`);
    await waitForState(page, "dev-sign-in-off");
    assert.equal(await page.locator("form[action='/api/dev/sign-in']").count(), 0);
    await screenshot(page, "dev-sign-in-off");

    const minting = await fetch(`${appUrl()}/api/dev/sign-in`, {
      method: "POST",
      headers: { Origin: appUrl(), "Content-Type": "application/x-www-form-urlencoded" },
      body: "user_id=alice",
      redirect: "manual",
    });
    assert.equal(minting.status, 404);
    assert.equal(minting.headers.get("set-cookie"), null);

    // A cookie the dev sign-in would accept, signed with the right secret, is ignored when it is off.
    await context.addCookies([{ name: "credits_dev_session", value: devSessionCookie("alice"), url: appUrl() }]);
    await page.goto(`${appUrl()}/credits`);
    await waitForState(page, "signed-out");
    assert.equal(await page.getByTestId("balance").count(), 0);
    await screenshot(page, "signed-out");
    await context.close();
  } finally {
    await stopProcess(app);
  }
});

let devApp;
const buyerId = `e2e-${runId}`;

async function devSignInApp() {
  devApp ??= await startApp("next", { DEV_SIGN_IN: "1" });
  return devApp;
}

test("sign in, see 0, buy a pack through Checkout, see it pending, credited, then refunded", async () => {
  await devSignInApp();
  const userId = buyerId;
  const context = await browser.newContext();
  const browserRequests = [];
  context.on("request", (request) => browserRequests.push(request.url()));
  const page = await context.newPage();

  // A cross-site form post is refused before anything happens.
  const forged = await fetch(`${appUrl()}/api/dev/sign-in`, {
    method: "POST",
    headers: { Origin: "http://evil.example", "Content-Type": "application/x-www-form-urlencoded" },
    body: `user_id=${userId}`,
    redirect: "manual",
  });
  assert.equal(forged.status, 403);

  await signIn(page, userId);
  assert.equal(await page.getByTestId("user").textContent(), userId);
  assert.equal(await balance(page), "0");
  assert.equal(await page.getByTestId("payment").count(), 0);
  assert.equal(await page.getByTestId("next-expiry").count(), 0, "nothing expires: no sentence");
  await screenshot(page, "signed-in-zero-balance");

  // Hold the webhooks back, so that the return page is seen before they land.
  await pauseDeliveries(true);
  await page.getByTestId("buy-small").click();
  await page.waitForURL(new RegExp(`^${standInUrl()}/c/pay/cs_test_`));
  assert.match(await page.locator("h1").textContent(), /Pay EUR 5\.00/);
  await screenshot(page, "stripe-checkout");
  await page.getByRole("button", { name: /^Pay/ }).click();
  await page.waitForURL(new RegExp(`^${appUrl()}/credits\\?checkout=success&session_id=cs_test_`));
  const sessionId = new URL(page.url()).searchParams.get("session_id");
  await waitForState(page, "purchase-pending");
  assert.equal(await balance(page), "0");
  assert.equal(await page.getByTestId("payment-status").first().textContent(), "awaiting payment");
  await screenshot(page, "purchase-pending");

  // The stand-in now delivers the signed events; the page reloads itself until the credit shows.
  await pauseDeliveries(false);
  await waitForState(page, "purchase-credited");
  assert.equal(await balance(page), "100");
  assert.equal(await page.getByTestId("payment-status").first().textContent(), "credited");
  assert.equal(await page.getByTestId("transaction").count(), 1);
  // The pack is valid 365 days from its credit (a UTC date: today's or tomorrow's, a year on).
  const expiry = (await page.getByTestId("next-expiry").textContent()).match(/^100 credits expire on (\d{4}-\d{2}-\d{2})$/);
  assert.ok(expiry, "the balance shows when the pack's credits expire");
  const days = (Date.parse(`${expiry[1]}T00:00:00Z`) - Date.now()) / 86_400_000;
  assert.ok(days > 363 && days <= 366, `expires in ${days} days`);
  await screenshot(page, "purchase-credited");

  // A refund of the whole payment through the stand-in's refund API (as an operator would in Stripe).
  const session = await standIn("GET", `/v1/checkout/sessions/${sessionId}`);
  assert.equal(session.payment_status, "paid");
  const refund = await standIn("POST", "/v1/refunds", `payment_intent=${session.payment_intent}`);
  assert.equal(refund.amount, 500);
  await page.goto(`${appUrl()}/credits`);
  const refunded = page.locator('[data-testid="payment-status"]', { hasText: "refunded" });
  const deadline = Date.now() + STATE_WAIT_MS_MAX;
  // /me/credits reads the payments, the balance and the journal in three concurrent calls, each current when
  // read: a page rendered while the refund lands may show one part before the others. Wait for all of it.
  while (!(await refunded.count()) || (await page.getByTestId("transaction").count()) !== 2) {
    assert.ok(Date.now() < deadline, "the refund never showed");
    await sleep(POLL_INTERVAL_MS * 2);
    await page.reload();
  }
  assert.equal(await balance(page), "0");
  assert.equal(await page.getByTestId("next-expiry").count(), 0, "the refund took the expiring credits back");
  assert.equal(await page.getByTestId("transaction").count(), 2);
  assert.match(await page.getByTestId("transaction").first().textContent(), /Refund.*-100/);
  await screenshot(page, "refunded");

  // The browser only ever spoke to the app and to the (stand-in) Checkout page, and never saw a JWT.
  const hosts = new Set(browserRequests.map((url) => new URL(url).host));
  assert.deepEqual([...hosts].sort(), [new URL(appUrl()).host, new URL(standInUrl()).host].sort());
  assert.ok(!(await page.content()).includes("eyJ"), "a JWT reached the page");
  await context.close();
});

test("history pages through the gateway's cursor; a cancelled Checkout charges nothing", async () => {
  await devSignInApp();
  const userId = `e2e-pages-${runId}`;
  const adjustmentsCount = 11; // One more than a page (lib/gateway.ts TRANSACTIONS_PAGE_SIZE).
  for (let index = 1; index <= adjustmentsCount; index += 1) {
    const response = await fetch(`${gatewayUrl()}/admin/adjust`, {
      method: "POST",
      headers: { Authorization: `Bearer ${userJwt(`e2e-admin-${runId}`, ["admin"])}`, "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: userId, amount: index, reason: `welcome bonus ${index}`, idempotency_key: `e2e-${runId}-${index}` }),
    });
    assert.equal(response.status, 200, await response.text());
  }
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, userId);
  assert.equal(await balance(page), "66");
  assert.equal(await page.getByTestId("transaction").count(), 10);
  assert.equal(await page.getByRole("link", { name: "Newest" }).count(), 0);
  await page.getByRole("link", { name: "Older" }).click();
  await page.waitForURL(/\/credits\?cursor=/);
  assert.equal(await page.getByTestId("transaction").count(), 1);
  assert.match(await page.getByTestId("transaction").textContent(), /Adjustment\s*\+1\s*1$/);
  assert.equal(await page.getByRole("link", { name: "Older" }).count(), 0);
  await screenshot(page, "history-older-page");
  await page.getByRole("link", { name: "Newest" }).click();
  await page.waitForURL(`${appUrl()}/credits`);
  assert.equal(await page.getByTestId("transaction").count(), 10);

  await page.getByTestId("buy-medium").click();
  await page.waitForURL(new RegExp(`^${standInUrl()}/c/pay/cs_test_`));
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.waitForURL(`${appUrl()}/credits?checkout=cancelled`);
  await waitForState(page, "checkout-cancelled");
  assert.equal(await balance(page), "66");
  assert.equal(await page.getByTestId("payment-status").first().textContent(), "awaiting payment");
  await screenshot(page, "checkout-cancelled");

  // The JSON route for client components: the same data with the session cookie, 401 without.
  const api = await page.request.get(`${appUrl()}/api/credits`);
  assert.equal(api.status(), 200);
  const body = await api.json();
  assert.equal(body.balance, 66);
  assert.equal(body.user_id, userId);
  assert.ok(!(await api.text()).includes("eyJ"));
  const anonymous = await fetch(`${appUrl()}/api/credits`);
  assert.equal(anonymous.status, 401);
  assert.equal((await anonymous.json()).error.code, "UNAUTHENTICATED");

  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${appUrl()}/sign-in`);
  await page.goto(`${appUrl()}/credits`);
  await waitForState(page, "signed-out");
  await context.close();
});

test("rate limited by the gateway, then the ledger unavailable, as a person sees them", async () => {
  await devSignInApp();
  const userId = buyerId;
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, userId);

  // Rate limited: another user spends their whole per-user allowance on the gateway first.
  const busyUser = `e2e-busy-${runId}`;
  let answered429 = false;
  for (let attempt = 0; attempt < RATE_LIMIT_ATTEMPTS_MAX && !answered429; attempt += 1) {
    const response = await fetch(`${gatewayUrl()}/me/credits`, { headers: { Authorization: `Bearer ${userJwt(busyUser)}` } });
    await response.arrayBuffer();
    answered429 = response.status === 429;
  }
  assert.ok(answered429, "the gateway never rate-limited the busy user");
  const busyContext = await browser.newContext();
  const busyPage = await busyContext.newPage();
  await signIn(busyPage, busyUser);
  await waitForState(busyPage, "rate-limited");
  await screenshot(busyPage, "rate-limited");
  await busyContext.close();

  // Ledger unavailable: the ledger's processes are frozen (SIGSTOP), the gateway answers 503.
  const ledgerPids = descendants(suite.pid).filter((pid) => commandLine(pid).includes("services.ledger"));
  assert.ok(ledgerPids.length > 0, "no ledger process found under the suite");
  for (const pid of ledgerPids) process.kill(pid, "SIGSTOP");
  try {
    // The same request straight to the gateway, at the same time: what the app turns into the page.
    const [direct] = await Promise.all([
      fetch(`${gatewayUrl()}/me/credits`, { headers: { Authorization: `Bearer ${userJwt(userId)}` } }),
      page.goto(`${appUrl()}/credits`),
    ]);
    assert.equal(direct.status, 503);
    assert.equal((await direct.json()).error.code, "UNAVAILABLE");
    await waitForState(page, "unavailable");
    await screenshot(page, "ledger-unavailable");
  } finally {
    for (const pid of ledgerPids) process.kill(pid, "SIGCONT");
  }
  await context.close();
});

// --- process tree (Linux /proc) ---------------------------------------------------------------------

function parentPid(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

function commandLine(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

function descendants(rootPid) {
  const parents = new Map();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      parents.set(Number(name), parentPid(name));
    } catch {
      // The process ended while we looked.
    }
  }
  const found = [];
  const queue = [rootPid];
  while (queue.length) {
    const pid = queue.shift();
    for (const [child, parent] of parents) {
      if (parent === pid) {
        found.push(child);
        queue.push(child);
      }
    }
  }
  return found;
}
