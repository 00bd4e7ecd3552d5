// Browser test of the operators' console (GET /ui/, docs/CONSOLE.md): Debian's chromium, driven
// headless by puppeteer-core, against a real `callhook serve` (SQLite in a temp dir, 127.0.0.1
// only) and a receiver of this test's own whose answers it sets per Voice App.
//
// It signs in with a wrong key (a clear message), a read key (no action button anywhere), then
// an admin key; sees an app whose receiver answers 500 as failing with its last error; finds a
// message by ActiveCallId, opens it, sees its attempts; fixes the receiver, replays it and sees
// it delivered without a reload; disables and enables an app; shows a record full of markup
// and quotes as text with nothing run (any dialog, page error, console error or CSP violation
// fails the test), personal fields masked until revealed; reads the ops events; and loads the
// page through a path prefix. Screenshots go to the output folder.
//
// usage: node console.mjs --callhook PATH --out DIR [--chromium PATH] [--pause]
//   --pause: after the run, leave serve and the receiver running and print how to reach them
//            (Ctrl-C ends it); for looking at the page by hand.

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, openSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const HOST = "127.0.0.1";
const WAIT_MS = 20000; // for anything the page should show: generous, for a loaded 2-core machine
const PHONE = "+15550100123";
const OPS_SINK = "ops-sink"; // the receiver's path for the operational webhook
const EMAIL = "jane.doe@example.com";

function die(message) {
    console.error(`browser: ${message}`);
    process.exit(1);
}

function parseArgs(argv) {
    const opts = { callhook: null, out: null, chromium: "/usr/bin/chromium", pause: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === "--callhook" && i + 1 < argv.length) opts.callhook = argv[++i];
        else if (a === "--out" && i + 1 < argv.length) opts.out = argv[++i];
        else if (a === "--chromium" && i + 1 < argv.length) opts.chromium = argv[++i];
        else if (a === "--pause") opts.pause = true;
        else die(`unknown argument '${a}'\nusage: node console.mjs --callhook PATH --out DIR [--chromium PATH] [--pause]`);
    }
    if (!opts.callhook || !opts.out) die("usage: node console.mjs --callhook PATH --out DIR [--chromium PATH] [--pause]");
    if (!existsSync(opts.callhook)) die(`no callhook binary at '${opts.callhook}'`);
    if (!existsSync(opts.chromium)) die(`no chromium at '${opts.chromium}': run \`make deps\` (Debian's chromium package)`);
    return opts;
}

// puppeteer-core comes from the committed lockfile through `make test-deps`; its absence is a
// failure, never a skip.
async function loadPuppeteer() {
    const manifest = join(HERE, "node_modules", "puppeteer-core", "package.json");
    if (!existsSync(manifest)) die(`'${dirname(manifest)}' is missing: run \`make test-deps\` first`);
    const pinned = JSON.parse(readFileSync(join(HERE, "package.json"), "utf8")).dependencies["puppeteer-core"];
    const found = JSON.parse(readFileSync(manifest, "utf8")).version;
    if (found !== pinned) die(`puppeteer-core ${found} is installed but package.json pins ${pinned}: run \`make test-deps\``);
    return (await import("puppeteer-core")).default;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on("error", reject);
        s.listen(0, HOST, () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

// ---------------------------------------------------------------------------------------------
// The receiver: POST /<app>/<event> answers what status.get(app) says (200 by default).

function startReceiver() {
    const status = new Map();
    const received = [];
    const server = http.createServer((req, res) => {
        let body = "";
        req.on("data", (c) => (body += c));
        req.on("end", () => {
            const app = decodeURIComponent(req.url.split("/")[1] || "");
            const code = status.get(app) || 200;
            received.push({ app, code, headers: req.headers, body });
            const text = code >= 300 ? '{"error":"the CRM is down <maintenance>"}' : '{"ok":true}';
            res.writeHead(code, { "Content-Type": "application/json" });
            res.end(text);
        });
    });
    return new Promise((resolve) => {
        server.listen(0, HOST, () => resolve({ server, status, received, url: `http://${HOST}:${server.address().port}` }));
    });
}

// A reverse proxy that puts serve under /ops/callhook/ (as a site's proxy would), to prove the
// page works behind a path prefix; it records every path asked of it.
function startPrefixProxy(port, prefix) {
    const seen = [];
    const server = http.createServer((req, res) => {
        seen.push(req.url);
        if (!req.url.startsWith(prefix)) {
            res.writeHead(404, { "Content-Type": "text/plain" });
            res.end("outside the prefix\n");
            return;
        }
        const up = http.request({ host: HOST, port, method: req.method, path: req.url.slice(prefix.length - 1), headers: req.headers }, (r) => {
            res.writeHead(r.statusCode, r.headers);
            r.pipe(res);
        });
        up.on("error", () => {
            res.writeHead(502);
            res.end();
        });
        req.pipe(up);
    });
    return new Promise((resolve) => {
        server.listen(0, HOST, () => resolve({ server, seen, url: `http://${HOST}:${server.address().port}${prefix}` }));
    });
}

// ---------------------------------------------------------------------------------------------
// callhook serve

async function startServe(bin, dir, adminKey, extraArgs) {
    const env = { ...process.env, CALLHOOK_ADMIN_KEY: adminKey, NO_PROXY: "127.0.0.1,localhost", no_proxy: "127.0.0.1,localhost" };
    for (const v of ["http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]) delete env[v];
    const db = `sqlite:${join(dir, "callhook.db")}`;
    const logPath = join(dir, "serve.log");
    for (let tries = 0; tries < 3; tries++) {
        const port = await freePort();
        const log = openSync(logPath, "a");
        const args = ["serve", "--listen", `${HOST}:${port}`, "--db", db, ...extraArgs];
        const proc = spawn(bin, args, { env, cwd: dir, stdio: ["ignore", log, log] });
        let exited = null;
        proc.on("exit", (code, signal) => (exited = code ?? signal));
        const until = Date.now() + 30000;
        while (Date.now() < until && exited === null) {
            try {
                const r = await fetch(`http://${HOST}:${port}/healthz`);
                if (r.status === 200) return { proc, port, db, base: `http://${HOST}:${port}`, logPath };
            } catch {
                // not listening yet
            }
            await sleep(100);
        }
        if (exited === null) proc.kill("SIGKILL");
        const text = readFileSync(logPath, "utf8");
        if (!/in use|cannot (bind|listen)/i.test(text)) die(`serve did not start:\n${text.slice(-3000)}`);
    }
    die(`serve did not start:\n${readFileSync(logPath, "utf8").slice(-3000)}`);
}

function createKey(bin, db, role) {
    const p = spawnSync(bin, ["key", "create", "--role", role, "--db", db], { encoding: "utf8", timeout: 30000 });
    const words = (p.stdout || "").trim().split(/\s+/);
    if (p.status !== 0 || !words.length) die(`callhook key create --role ${role}: ${p.stdout} ${p.stderr}`);
    return words[words.length - 1];
}

function apiClient(base, key) {
    return async (method, path, body) => {
        const r = await fetch(base + path, {
            method,
            headers: { Authorization: `Bearer ${key}`, ...(body !== undefined ? { "Content-Type": "application/json" } : {}) },
            body: body === undefined ? undefined : JSON.stringify(body),
        });
        const text = await r.text();
        let json = null;
        try {
            json = text ? JSON.parse(text) : null;
        } catch {
            json = null;
        }
        return { status: r.status, json, text };
    };
}

// ---------------------------------------------------------------------------------------------
// Checks

let passed = 0;
const failures = [];

function check(ok, what) {
    if (!ok) throw new Error(what);
}

async function step(name, fn) {
    const t0 = Date.now();
    try {
        await fn();
        passed++;
        console.log(`ok - ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
        failures.push(name);
        console.log(`not ok - ${name}: ${e.message}`);
        throw e;
    }
}

// Waits until fn (run in the page with args) returns something truthy; a clear error otherwise.
async function waitFor(page, what, fn, ...args) {
    try {
        return await page.waitForFunction(fn, { timeout: WAIT_MS, polling: 100 }, ...args);
    } catch (e) {
        const text = await page.evaluate(() => document.body.innerText.slice(0, 1500)).catch(() => "?");
        throw new Error(`${what}: not seen within ${WAIT_MS / 1000} s (${e.message.split("\n")[0]})\n--- page text ---\n${text}\n---`);
    }
}

// The test's Voice Apps (serve may list its own callhook-ops beside them).
const APPS = ["crm-main", "billing", "crm-failing", "helpdesk-eu"];
// In the page: every app of ids has its row in the overview.
const allRows = (ids) => ids.every((id) => document.querySelector(`#apps tr[data-app="${id}"]`));

const textOf = (page, selector) => page.$eval(selector, (el) => el.textContent);

// Waits until fn (here, in node: the API) returns something truthy, and returns it.
async function waitApi(what, fn) {
    const until = Date.now() + WAIT_MS;
    let last = null;
    while (Date.now() < until) {
        last = await fn();
        if (last) return last;
        await sleep(200);
    }
    throw new Error(`${what}: not seen within ${WAIT_MS / 1000} s`);
}

// ---------------------------------------------------------------------------------------------

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const puppeteer = await loadPuppeteer();
    mkdirSync(opts.out, { recursive: true });
    const dir = mkdtempSync(join(tmpdir(), "callhook-browser-"));
    const adminKey = "chk_" + randomBytes(32).toString("hex");
    const rx = await startReceiver();
    // Its operational webhook is the receiver too (on 127.0.0.1, so that range is allowed),
    // checked every second so a disabled app is reported at once.
    const serve = await startServe(opts.callhook, dir, adminKey, [
        "--ops-webhook", `${rx.url}/${OPS_SINK}/events`, "--allow-cidr", "127.0.0.1/32", "--ops-check-interval-s", "1",
    ]);
    let browser = null;
    let proxy = null;
    const cleanup = () => {
        if (serve.proc.exitCode === null) serve.proc.kill("SIGTERM");
    };
    process.on("exit", cleanup);
    try {
        const readKey = createKey(opts.callhook, serve.db, "read");
        const admin = apiClient(serve.base, adminKey);
        const ui = `${serve.base}/ui/`;

        // ---- data: four apps, traffic, one failing app, one record full of markup ----
        const fast = { allowInsecureHttp: true, allowPrivateNetwork: true, timeoutMs: 3000, connectTimeoutMs: 1000 };
        const apps = {
            "crm-main": { ...fast, headers: { "X-Api-Key": "tok-crm-main-7f3a" } },
            billing: { ...fast },
            "crm-failing": { ...fast, retryScheduleSeconds: [1, 1] },
            "helpdesk-eu": { ...fast },
        };
        for (const [id, settings] of Object.entries(apps)) {
            const r = await admin("PUT", `/v1/voice-apps/${id}`, {
                BeginCallEventProcessingUrl: `${rx.url}/${id}/begin-call`,
                EndCallEventProcessingUrl: `${rx.url}/${id}/end-call`,
                ...settings,
            });
            check(r.status === 201, `PUT /v1/voice-apps/${id}: ${r.status} ${r.text}`);
        }
        rx.status.set("crm-failing", 500);
        const ingest = async (app, record, event = "begin-call") => {
            const r = await admin("POST", `/v1/voice-apps/${app}/${event}`, record);
            check(r.status === 202, `ingest to ${app}: ${r.status} ${r.text}`);
            return r.json.messageId;
        };
        const base = JSON.parse(readFileSync(join(HERE, "..", "data", "payloads", "begin-call.json"), "utf8"));
        for (let i = 0; i < 12; i++) {
            await ingest("crm-main", { ...base, ActiveCallId: `call-main-${i}`, CorrelationId: `corr-main-${i}` });
            if (i % 2 === 0) await ingest("billing", { ...base, ActiveCallId: `call-billing-${i}`, CorrelationId: `corr-billing-${i}` });
        }
        const failingCall = "call-7d1e-failing";
        const failingId = await ingest("crm-failing", { ...base, ActiveCallId: failingCall, CorrelationId: "corr-failing-1" });
        await ingest("crm-failing", { ...base, ActiveCallId: "call-7d1e-failing-2", CorrelationId: "corr-failing-2" });
        const xssCall = 'xss-<img src=x onerror=alert(4)>-"q"';
        const xssRecord = {
            ...base,
            ActiveCallId: xssCall,
            CorrelationId: "corr-xss-1",
            CallerId: PHONE,
            CallerDisplayName: '<script>window.__xss = 1; alert("script")</script>',
            QueueName: '<img src=x onerror="window.__xss = 2; alert(2)">',
            CustomData: { note: `He said "hello" & left 'quietly'`, html: '"><svg onload=alert(3)>', email: EMAIL },
        };
        const xssId = await ingest("crm-main", xssRecord);
        {
            const r = await admin("PATCH", "/v1/voice-apps/helpdesk-eu", { enabled: false });
            check(r.status === 200 && r.json.enabled === false, `disable helpdesk-eu: ${r.status} ${r.text}`);
        }

        // ---- the browser ----
        browser = await puppeteer.launch({
            executablePath: opts.chromium,
            headless: true,
            userDataDir: join(dir, "chromium"),
            args: [
                "--no-sandbox", // the test may run as root, in a container
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                // Nothing but 127.0.0.1: no proxy, no background requests of the browser's own.
                "--proxy-server=direct://",
                "--proxy-bypass-list=*",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-domain-reliability",
                "--disable-sync",
                "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            ],
        });
        const page = await browser.newPage();
        await page.setViewport({ width: 1366, height: 900 });
        const problems = [];
        let allowed401 = false;
        page.on("dialog", async (d) => {
            problems.push(`a dialog opened (${d.type()}: ${d.message()})`);
            await d.dismiss().catch(() => {});
        });
        page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
        page.on("console", (m) => {
            if (m.type() !== "error" && m.type() !== "warning") return;
            const text = m.text();
            // The browser logs an API answer of 401 as a failed load: expected for a wrong key.
            if (allowed401 && /Failed to load resource: .*status of 401/.test(text)) return;
            if (m.type() === "error" || /Content Security Policy|Refused to/i.test(text)) problems.push(`console ${m.type()}: ${text}`);
        });
        // CSP violations, as the page's own event reports them.
        await page.evaluateOnNewDocument(() => {
            window.__cspViolations = [];
            document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
        });
        const noProblems = async (where) => {
            const csp = await page.evaluate(() => window.__cspViolations || []);
            const xss = await page.evaluate(() => window.__xss);
            check(csp.length === 0, `${where}: CSP violations: ${csp.join("; ")}`);
            check(xss === undefined, `${where}: a record's markup ran (window.__xss = ${xss})`);
            check(problems.length === 0, `${where}: ${problems.join("; ")}`);
        };
        const actionButtons = () => page.$$eval("button.action", (b) => b.length);
        const signIn = async (key) => {
            await waitFor(page, "the sign-in form", () => document.getElementById("signin-key"));
            await page.$eval("#signin-key", (el) => (el.value = ""));
            await page.type("#signin-key", key);
            await page.click("#signin-submit");
        };
        const go = async (hash) => {
            await page.evaluate((h) => (location.hash = h), hash);
        };

        await step("a wrong key is refused with a clear message", async () => {
            await page.goto(ui, { waitUntil: "domcontentloaded" });
            allowed401 = true;
            await signIn("chk_" + "0".repeat(64));
            await waitFor(page, "the sign-in error", () => {
                const e = document.getElementById("signin-error");
                return e && !e.hidden && e.textContent.includes("not accepted (401");
            });
            allowed401 = false;
            check(!(await page.$("#nav:not([hidden])")), "the navigation is shown without a valid key");
            check((await page.evaluate(() => sessionStorage.length)) === 0, "a refused key was kept in sessionStorage");
            await noProblems("wrong key");
        });

        await step("a read key sees every app and no action button", async () => {
            await signIn(readKey);
            await waitFor(page, "a row for each app in the overview", allRows, APPS);
            check((await textOf(page, "#role")) === "read key", "the role badge does not say read key");
            check((await page.evaluate(() => document.cookie)) === "", "the page set a cookie");
            check((await page.evaluate(() => sessionStorage.getItem("callhook.apiKey"))) === readKey, "the key is not in sessionStorage");
            check((await actionButtons()) === 0, "action buttons on the overview for a read key");
            await go("#/apps/crm-main");
            await waitFor(page, "crm-main's settings", () => document.querySelector("table.settings"));
            await waitFor(page, "crm-main's state", () => document.getElementById("app-state").textContent !== "…");
            check((await actionButtons()) === 0, "action buttons on an app's page for a read key");
            check(!(await page.$("#show-secret")) && !(await page.$("#action-disable")), "secret or disable button for a read key");
            const text = await page.evaluate(() => document.body.innerText);
            check(text.includes("hidden (admin keys only)") && !text.includes("tok-crm-main"), "a header value is shown to a read key");
            await go(`#/messages/${xssId}`);
            await waitFor(page, "the masked record", () => document.getElementById("record-state")?.textContent === "masked");
            check((await actionButtons()) === 0, "replay or reveal buttons for a read key");
            const body = await page.evaluate(() => document.body.innerText);
            check(!body.includes(PHONE.slice(1)) && !body.includes(EMAIL), "personal fields shown unmasked to a read key");
            await noProblems("read key");
            await page.click("#signout");
            await waitFor(page, "the sign-in form after signing out", () => document.getElementById("signin-key"));
            check((await page.evaluate(() => sessionStorage.length)) === 0, "signing out left the key in sessionStorage");
        });

        await step("an admin key sees the failing app with its last error, live", async () => {
            await go("#/");
            await signIn(adminKey);
            await waitFor(page, "a row for each app in the overview", allRows, APPS);
            check((await textOf(page, "#role")) === "admin key", "the role badge does not say admin key");
            await waitFor(page, "crm-failing shown failing with HTTP 500", () => {
                const row = document.querySelector('#apps tr[data-app="crm-failing"]');
                return row && row.querySelector(".badge").textContent === "failing" && row.querySelector(".lasterror").textContent.includes("500");
            });
            await waitFor(page, "helpdesk-eu shown disabled", () => document.querySelector('#apps tr[data-app="helpdesk-eu"] .badge')?.textContent === "disabled");
            // Trouble first: the failing and the disabled app above the healthy ones.
            const order = await page.$$eval("#apps tbody tr", (rows) => rows.map((r) => r.dataset.app));
            check(order.indexOf("crm-failing") < order.indexOf("crm-main") && order.indexOf("helpdesk-eu") < order.indexOf("billing"), `apps in trouble are not first: ${order}`);
            // serve's own ops webhook app is listed, and said to be one.
            await waitFor(page, "callhook-ops marked as the ops webhook", () => document.querySelector('#apps tr[data-app="callhook-ops"] td.app .sub')?.textContent === "ops webhook");
            check(await page.$eval('#apps tr[data-app="billing"] td.app', (e) => e.querySelector(".sub") === null), "billing is marked as something");
            // The page refreshes itself: new deliveries appear without a reload.
            await page.evaluate(() => (window.__sameDocument = true));
            const delivered = () => page.$eval('#apps tr[data-app="billing"] .window .ok-count', (e) => Number(e.textContent.replace(/,/g, "")));
            await waitFor(page, "billing's first deliveries", () => Number(document.querySelector('#apps tr[data-app="billing"] .window .ok-count')?.textContent) >= 6);
            const before = await delivered();
            for (let i = 0; i < 3; i++) await ingest("billing", { ...base, ActiveCallId: `call-billing-live-${i}` });
            await waitFor(page, "three more deliveries of billing", (n) => Number(document.querySelector('#apps tr[data-app="billing"] .window .ok-count')?.textContent) >= n, before + 3);
            check(await page.evaluate(() => window.__sameDocument === true), "the overview reloaded the page");
            await waitFor(page, "the rates", () => document.querySelectorAll(".stats .stat").length >= 3);
            // The page down to the end of its content (not the empty viewport below it).
            const height = await page.evaluate(() => Math.ceil(document.querySelector("main").getBoundingClientRect().bottom));
            await page.screenshot({ path: join(opts.out, "console-overview.png"), clip: { x: 0, y: 0, width: 1366, height: Math.min(height, 900) } });
            await noProblems("overview");
        });

        await step("a message found by ActiveCallId shows its attempts", async () => {
            await page.click('a[data-nav="messages"]');
            await waitFor(page, "the search form", () => document.getElementById("f-active-call-id"));
            await page.type("#f-active-call-id", failingCall);
            await page.click("#search-submit");
            await waitFor(page, "one message found", (id) => {
                const rows = document.querySelectorAll("#messages tbody tr");
                return rows.length === 1 && rows[0].dataset.message === id;
            }, failingId);
            await waitFor(page, "the message dead or failed", () => /dead|failed/.test(document.querySelector("#messages tbody .badge").textContent));
            await page.click("#messages tbody tr a.open");
            await waitFor(page, "its attempts, each HTTP 500", () => {
                const rows = document.querySelectorAll("#attempts tr.attempt");
                return rows.length >= 2 && [...rows].every((r) => r.textContent.includes("500") && r.textContent.includes("http"));
            });
            const first = await page.$eval("#attempts tr.attempt", (r) => r.textContent);
            check(first.includes("the CRM is down <maintenance>"), `the first bytes of the response are not shown: ${first}`);
            check((await textOf(page, "#message-callid")) === failingCall, "the message's ActiveCallId is not shown");
            // The request headers each attempt sent, the signature shortened.
            await page.click("#attempts details.headers summary");
            const headers = await page.$eval("#attempts details.headers", (d) => d.textContent);
            check(/webhook-id/i.test(headers) && /webhook-signature/i.test(headers) && headers.includes("…"), `request headers not shown with a shortened signature: ${headers}`);
            await noProblems("message");
        });

        await step("replayed after the receiver is fixed, it shows delivered without a reload", async () => {
            rx.status.set("crm-failing", 200);
            await page.evaluate(() => (window.__sameDocument = true));
            await page.click("#action-replay");
            await waitFor(page, "the message delivered", () => document.getElementById("message-status").textContent === "delivered");
            await waitFor(page, "a last attempt with HTTP 200", () => {
                const rows = document.querySelectorAll("#attempts tr.attempt");
                return rows.length >= 3 && rows[rows.length - 1].textContent.includes("200");
            });
            check(await page.evaluate(() => window.__sameDocument === true), "the page reloaded");
            const r = await admin("GET", `/v1/messages/${failingId}`);
            check(r.json.status === "delivered", `the API says ${r.json.status}`);
            check(rx.received.some((x) => x.app === "crm-failing" && x.code === 200), "the receiver got no successful delivery");
            await page.screenshot({ path: join(opts.out, "console-message.png"), fullPage: true });
            await noProblems("replay");
        });

        await step("a record of markup and quotes is text, masked until revealed", async () => {
            await go("#/messages?" + new URLSearchParams({ activeCallId: xssCall }));
            await waitFor(page, "the message found by its odd ActiveCallId", (id) => document.querySelector(`#messages tr[data-message="${id}"]`), xssId);
            check((await page.$eval("#messages tbody code.callid", (e) => e.textContent)) === xssCall, "the ActiveCallId is not shown as text");
            await go(`#/messages/${xssId}`);
            await waitFor(page, "the masked record", () => document.getElementById("record-state")?.textContent === "masked");
            let text = await textOf(page, "#record");
            check(!text.includes(PHONE) && !text.includes(EMAIL), "personal fields are not masked by default");
            await page.click("#reveal");
            await waitFor(page, "the revealed record", () => document.getElementById("record-state")?.textContent === "revealed");
            text = await textOf(page, "#record");
            for (const s of [PHONE, EMAIL, xssRecord.CallerDisplayName, xssRecord.QueueName, xssRecord.CustomData.html]) {
                check(text.includes(JSON.stringify(s).slice(1, -1)), `not shown as text: ${s}`);
            }
            check(text.includes('He said \\"hello\\" & left \'quietly\''), "the quotes are not shown as written");
            const elements = await page.$$eval("#record *", (els) => [...new Set(els.map((e) => e.tagName.toLowerCase()))]);
            // The JSON view is one <pre> of <span>s: anything else came from the record.
            check(elements.every((t) => t === "pre" || t === "span"), `the record made elements: ${elements}`);
            check((await page.$$("main script, main img, main iframe, main svg:not(.chart) foreignObject")).length === 0, "markup of the record became elements");
            await page.click("#reveal");
            await waitFor(page, "masked again", () => document.getElementById("record-state")?.textContent === "masked");
            await sleep(300); // time for anything injected to have run
            await noProblems("markup record");
        });

        await step("an app is disabled and enabled again", async () => {
            await go("#/apps/crm-main");
            await waitFor(page, "the disable button", () => document.getElementById("action-disable"));
            await waitFor(page, "the chart", () => document.querySelector("svg.chart"));
            await page.click("#action-disable");
            await waitFor(page, "the confirmation", () => document.getElementById("confirm-disable"));
            await page.click("#confirm-disable");
            await waitFor(page, "crm-main disabled", () => document.getElementById("app-state").textContent === "disabled" && document.getElementById("action-enable"));
            check((await admin("GET", "/v1/voice-apps/crm-main")).json.enabled === false, "the API does not say disabled");
            await page.click("#action-enable");
            await waitFor(page, "crm-main enabled", () => document.getElementById("app-state").textContent !== "disabled" && document.getElementById("action-disable"));
            check((await admin("GET", "/v1/voice-apps/crm-main")).json.enabled === true, "the API does not say enabled");
            // A test event reaches the receiver, marked as one.
            const before = rx.received.length;
            await page.click("#action-test");
            await waitFor(page, "the test's result", () => /took the test event/.test(document.getElementById("action-result").textContent));
            const sent = rx.received.slice(before).find((x) => x.app === "crm-main");
            check(sent && sent.headers["x-callhook-test"] === "1", "no test event reached the receiver");
            // The signing secret, shown when asked.
            await page.click("#show-secret");
            await waitFor(page, "the secret", () => document.getElementById("secret-value")?.textContent.startsWith("whsec_"));
            await page.screenshot({ path: join(opts.out, "console-app.png"), fullPage: true });
            await noProblems("app actions");
        });

        await step("an app's secret is rotated and its dead messages recovered", async () => {
            const deadId = await waitApi("the second failing message dead", async () => {
                const r = await admin("GET", "/v1/messages?" + new URLSearchParams({ activeCallId: "call-7d1e-failing-2" }));
                return r.json.data.length === 1 && r.json.data[0].status === "dead" && r.json.data[0].id;
            });
            const old = (await admin("GET", "/v1/voice-apps/crm-failing/secret")).json.secret;
            await go("#/apps/crm-failing");
            await waitFor(page, "the rotate button", () => document.getElementById("action-rotate"));
            await page.click("#action-rotate");
            await waitFor(page, "the rotation's confirmation", () => document.getElementById("confirm-rotate"));
            await page.click("#confirm-rotate");
            await waitFor(page, "the new secret", (o) => {
                const v = document.getElementById("secret-value")?.textContent;
                return v && v.startsWith("whsec_") && v !== o;
            }, old);
            const now = (await admin("GET", "/v1/voice-apps/crm-failing/secret")).json;
            check(now.secret === (await textOf(page, "#secret-value")) && now.previous === old, "the secret shown is not the API's new one");
            await page.click("#action-recover");
            await waitFor(page, "the recover form", () => document.getElementById("confirm-recover"));
            await page.click("#confirm-recover");
            await waitFor(page, "one message due again", () => /^1 message created since .* is due again\.$/.test(document.getElementById("action-result").textContent));
            await waitApi("the recovered message delivered", async () => (await admin("GET", `/v1/messages/${deadId}`)).json.status === "delivered");
            await noProblems("rotate and recover");
        });

        await step("the ops events are listed: a message dead, an app disabled", async () => {
            // crm-failing's messages went dead; helpdesk-eu was disabled at the start.
            const events = await waitApi("a message.dead of crm-failing and a voice_app.disabled of helpdesk-eu", async () => {
                const r = await admin("GET", "/v1/ops-events?limit=200");
                check(r.status === 200, `GET /v1/ops-events: ${r.status} ${r.text}`);
                const has = (type, app) => r.json.data.some((e) => e.type === type && e.voiceAppId === app);
                return has("message.dead", "crm-failing") && has("voice_app.disabled", "helpdesk-eu") && r.json.data;
            });
            await page.click('a[data-nav="ops"]');
            await waitFor(page, "the ops events", (ids) => ids.every((id) => document.querySelector(`#ops-events tr[data-ops-event="${id}"]`)), events.map((e) => e.id));
            const rows = await page.$$eval("#ops-events tbody tr[data-ops-event]", (t) => t.map((r) => r.textContent));
            check(rows.some((t) => t.includes("message dead") && t.includes("crm-failing")), `no message dead row: ${rows}`);
            check(rows.some((t) => t.includes("app disabled") && t.includes("helpdesk-eu")), `no app disabled row: ${rows}`);
            // They were sent, signed, to the operational webhook.
            await waitApi("an ops event at the receiver", async () => rx.received.some((x) => x.app === OPS_SINK && x.headers["webhook-signature"]));
            await page.click("#ops-events details summary");
            const payload = await page.$eval("#ops-events details", (d) => d.textContent);
            check(/"type"/.test(payload), `the payload is not shown: ${payload}`);
            await noProblems("ops events");
        });

        await step("the page works behind a path prefix", async () => {
            proxy = await startPrefixProxy(serve.port, "/ops/callhook/");
            const p2 = await browser.newPage();
            const errors = [];
            p2.on("pageerror", (e) => errors.push(e.message));
            p2.on("console", (m) => m.type() === "error" && errors.push(m.text()));
            p2.on("dialog", (d) => errors.push("dialog " + d.message()));
            await p2.goto(proxy.url + "ui", { waitUntil: "domcontentloaded" }); // redirected to ui/
            check(p2.url() === proxy.url + "ui/", `the redirect went to ${p2.url()}`);
            await p2.waitForSelector("#signin-key", { timeout: WAIT_MS });
            await p2.type("#signin-key", adminKey);
            await p2.click("#signin-submit");
            await p2.waitForFunction(allRows, { timeout: WAIT_MS }, APPS);
            const outside = proxy.seen.filter((u) => !u.startsWith("/ops/callhook/"));
            check(outside.length === 0, `requests outside the prefix: ${outside}`);
            check(proxy.seen.some((u) => u.startsWith("/ops/callhook/v1/voice-apps/stats")), "the API was not reached through the prefix");
            check(errors.length === 0, errors.join("; "));
            await p2.close();
        });

        if (opts.pause) {
            console.log(`\npaused: ${ui}\n  admin key ${adminKey}\n  read key  ${readKey}\n  receiver  ${rx.url}\nCtrl-C ends it.`);
            await new Promise(() => {});
        }
    } finally {
        if (browser) await browser.close().catch(() => {});
        if (proxy) proxy.server.close();
        rx.server.close();
        cleanup();
        await sleep(200);
        if (failures.length) console.log(`--- serve's log (${serve.logPath}) ---\n${readFileSync(serve.logPath, "utf8").slice(-4000)}`);
        rmSync(dir, { recursive: true, force: true });
    }
}

main().then(
    () => {
        console.log(`${passed} passed, ${failures.length} failed`);
        process.exit(failures.length ? 1 : 0);
    },
    (e) => {
        if (!failures.length) console.log(`browser: ${e.stack || e.message}`);
        console.log(`${passed} passed, ${failures.length || 1} failed`);
        process.exit(1);
    },
);
