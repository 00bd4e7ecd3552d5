// Interop test: callhook against the npm Standard Webhooks implementations `standardwebhooks`
// and `svix`. Each library signs random cases that callhook verifies, callhook signs cases that
// each library verifies (and its v1 entries must equal the library's byte for byte), and
// forgeries (tampered body, wrong secret, other id or timestamp, timestamps out of the window)
// must be rejected by both sides for the same reason. callhook's side is interop_peer (peer.c),
// run once per batch.
//
// usage: node interop.mjs [--library standardwebhooks|svix]... [--cases N] <path to interop_peer>
// env:   INTEROP_SEED  replays a run (the seed is printed at the start)
//        INTEROP_CASES cases per direction per library (default 300)

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const PINNED = { standardwebhooks: "1.1.1", svix: "2.5.0" };
const TOLERANCE_S = 300; // both the libraries' and callhook's default window
const SKEW_S = 240; // positive cases stay this far inside the window
const FAR_S = 400; // "too old" and "too new" cases are at least this far out

function die(message) {
    console.error(`interop: ${message}`);
    process.exit(1);
}

// ---------------------------------------------------------------------------------------------
// Arguments and installed packages

function parseArgs(argv) {
    const opts = { libraries: [], cases: Number(process.env.INTEROP_CASES || 300), peer: null };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === "--library" && i + 1 < argv.length) opts.libraries.push(argv[++i]);
        else if (a === "--cases" && i + 1 < argv.length) opts.cases = Number(argv[++i]);
        else if (!a.startsWith("--") && opts.peer === null) opts.peer = a;
        else die(`unknown argument '${a}'\nusage: node interop.mjs [--library NAME]... [--cases N] PEER`);
    }
    if (opts.peer === null) die("usage: node interop.mjs [--library NAME]... [--cases N] PEER");
    if (!Number.isInteger(opts.cases) || opts.cases < 10)
        die(`cases must be a whole number of at least 10, not '${opts.cases}'`);
    if (opts.libraries.length === 0) opts.libraries = Object.keys(PINNED);
    for (const name of opts.libraries)
        if (!(name in PINNED)) die(`unknown library '${name}': expected one of ${Object.keys(PINNED).join(", ")}`);
    return opts;
}

// The packages come from the committed lockfile through `make test-deps`. Their absence is a
// failure, never a skip: a skipped interop test is one nobody notices.
function checkInstalled() {
    for (const [name, version] of Object.entries(PINNED)) {
        const dir = join(HERE, "node_modules", name);
        const manifest = join(dir, "package.json");
        if (!existsSync(manifest))
            die(`'${dir}' is missing: run \`make test-deps\` (npm ci --prefix tests/interop) first`);
        const found = JSON.parse(readFileSync(manifest, "utf8")).version;
        if (found !== version)
            die(`${name} ${found} is installed but package-lock.json pins ${version}: run \`make test-deps\``);
    }
}

// What each library needs: the Webhook class, its error class, and the header names it reads.
// svix reads svix-* and falls back to webhook-*; standardwebhooks reads webhook-* only.
async function loadLibrary(name) {
    const m = await import(name);
    const Webhook = m.Webhook ?? m.default?.Webhook;
    const VerificationError = m.WebhookVerificationError ?? m.default?.WebhookVerificationError;
    if (typeof Webhook !== "function" || typeof VerificationError !== "function")
        die(`${name} does not export Webhook and WebhookVerificationError`);
    const standard = ["webhook-id", "webhook-timestamp", "webhook-signature"];
    const headerSets = name === "svix" ? [["svix-id", "svix-timestamp", "svix-signature"], standard] : [standard];
    return { name, version: PINNED[name], Webhook, VerificationError, headerSets };
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness: sfc32, seeded through splitmix32

function makeRng(seed) {
    let s = seed >>> 0;
    const split = () => {
        s = (s + 0x9e3779b9) >>> 0;
        let z = s;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
        return (z ^ (z >>> 16)) >>> 0;
    };
    let a = split(), b = split(), c = split(), d = split();
    const u32 = () => {
        const t = (((a + b) >>> 0) + d) >>> 0;
        d = (d + 1) >>> 0;
        a = b ^ (b >>> 9);
        b = (c + (c << 3)) >>> 0;
        c = ((c << 21) | (c >>> 11)) >>> 0;
        c = (c + t) >>> 0;
        return t;
    };
    const rng = {
        u32,
        float: () => u32() / 2 ** 32,
        int: (lo, hi) => lo + Math.floor(rng.float() * (hi - lo + 1)), // both ends included
        chance: (p) => rng.float() < p,
        pick: (items) => items[rng.int(0, items.length - 1)],
        bytes(n) {
            const out = Buffer.alloc(n);
            for (let i = 0; i < n; i++) out[i] = u32() & 0xff;
            return out;
        },
        // [[weight, value], ...] -> value
        weighted(table) {
            const total = table.reduce((sum, [w]) => sum + w, 0);
            let x = rng.float() * total;
            for (const [w, v] of table) {
                if (x < w) return v;
                x -= w;
            }
            return table[table.length - 1][1];
        },
    };
    return rng;
}

// ---------------------------------------------------------------------------------------------
// Random UTF-8 text: every code point is a Unicode scalar value (no lone surrogates), so the
// string and its UTF-8 bytes convert both ways exactly, as the libraries need.

const SPECIALS = [0x0, 0x9, 0xa, 0xd, 0x1b, 0x7f, 0x85, 0xa0, 0x301, 0x200b, 0x200d, 0x2028, 0x2029,
    0xfeff, 0xfffd, 0xfffe, 0xffff, 0x10ffff];
const EMOJI = ["👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "👍🏽", "1️⃣", "🏳️‍🌈", "🧑🏿‍💻", "❤️", "☎️", "📞", "🤙", "😀", "🙈"];

function randomCodePoint(rng) {
    const range = rng.weighted([
        [40, [0x20, 0x7e]], // ASCII
        [5, "special"],
        [10, [0x80, 0x7ff]], // two bytes
        [10, [0x800, 0xd7ff]], // three bytes, below the surrogates
        [3, [0xe000, 0xffff]], // three bytes, above them
        [7, [0x4e00, 0x9fff]], // CJK
        [10, [0x1f300, 0x1faff]], // emoji
        [5, [0x10000, 0x10ffff]], // any four bytes
    ]);
    if (range === "special") return rng.pick(SPECIALS);
    return rng.int(range[0], range[1]);
}

function randomText(rng, maxCodePoints) {
    const n = rng.int(1, maxCodePoints);
    let out = "";
    for (let i = 0; i < n; i++)
        out += rng.chance(0.03) ? rng.pick(EMOJI) : String.fromCodePoint(randomCodePoint(rng));
    return out;
}

function randomJsonValue(rng, depth) {
    const kind = depth > 3 ? rng.int(0, 3) : rng.int(0, 5);
    switch (kind) {
    case 0: return randomText(rng, 30);
    case 1: return rng.chance(0.5) ? rng.int(-1e9, 1e9) : rng.float() * 1e6;
    case 2: return rng.pick([true, false, null]);
    case 3: return rng.pick(["", "Zoë", "Ñandú", "東京", "Москва", "😀 call", "\u0000", "a\"b\\c"]);
    case 4: return Array.from({ length: rng.int(0, 4) }, () => randomJsonValue(rng, depth + 1));
    default: {
        const obj = {};
        for (let i = rng.int(0, 5); i > 0; i--) obj[randomText(rng, 12)] = randomJsonValue(rng, depth + 1);
        return obj;
    }
    }
}

function callEvent(rng) {
    return {
        type: rng.pick(["call.started", "call.answered", "call.ended", "call.missed"]),
        timestamp: new Date(1.7e12 + rng.int(0, 1e9) * 1000).toISOString(),
        data: {
            call_id: rng.bytes(8).toString("hex"),
            from: `+${rng.int(1e9, 9e11)}`,
            to: `+${rng.int(1e9, 9e11)}`,
            caller_name: randomText(rng, 24),
            duration_s: rng.int(0, 7200),
            tags: Array.from({ length: rng.int(0, 3) }, () => randomText(rng, 10)),
            note: rng.chance(0.5) ? randomText(rng, 200) : null,
        },
    };
}

// Kinds of bodies, each a valid UTF-8 string.
const BODY_KINDS = {
    empty: () => "",
    large: (rng) => randomText(rng, 40000),
    json: (rng) => JSON.stringify(rng.chance(0.5) ? callEvent(rng) : randomJsonValue(rng, 0), null,
        rng.pick([undefined, undefined, 2, "\t"])),
    "broken json": (rng) => Array.from(JSON.stringify(callEvent(rng))).slice(0, -rng.int(1, 20)).join(""),
    text: (rng) => randomText(rng, 400),
    lines: (rng) => Array.from({ length: rng.int(1, 12) }, () => randomText(rng, 60)).join(rng.pick(["\n", "\r\n"])),
    emoji: (rng) => Array.from({ length: rng.int(1, 40) }, () => rng.pick(EMOJI)).join(rng.pick(["", " "])),
    // A byte order mark first: it must reach the signature, not be dropped by a decoder.
    bom: (rng) => `\ufeff${JSON.stringify(callEvent(rng))}`,
    form: (rng) => `name=${encodeURIComponent(randomText(rng, 20))}&note=${randomText(rng, 20)}`,
};

function randomBody(rng, index) {
    // The first cases of every set are the edges: the empty body and a large one.
    const kind = index === 0 ? "empty" : index === 1 ? "large" : rng.weighted([
        [3, "empty"], [35, "json"], [8, "broken json"], [25, "text"], [10, "lines"], [10, "emoji"],
        [5, "form"], [2, "bom"], [2, "large"],
    ]);
    const body = BODY_KINDS[kind](rng);
    if (Buffer.from(body, "utf8").toString("utf8") !== body)
        die(`internal error: a ${kind} body does not round-trip through UTF-8`);
    return body;
}

// A different body: one code point replaced, or one appended to an empty body.
function tamperBody(rng, body) {
    const cps = Array.from(body);
    if (cps.length === 0) return "x";
    const i = rng.int(0, cps.length - 1);
    let replacement;
    do replacement = String.fromCodePoint(randomCodePoint(rng));
    while (replacement === cps[i]);
    cps[i] = replacement;
    return cps.join("");
}

const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function randomMsgId(rng) {
    const kind = rng.weighted([[50, "svix"], [20, "uuid"], [25, "ascii"], [5, "longest"]]);
    if (kind === "svix") return "msg_" + Array.from({ length: 27 }, () => rng.pick(ID_CHARS)).join("");
    if (kind === "uuid") {
        const h = rng.bytes(16).toString("hex");
        return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    }
    // Printable ASCII without space; "longest" is callhook's limit, CH_MESSAGE_ID_MAX.
    const n = kind === "longest" ? 256 : rng.int(1, 64);
    return Array.from({ length: n }, () => String.fromCharCode(rng.int(0x21, 0x7e))).join("");
}

function otherMsgId(rng, id) {
    const last = id.charCodeAt(id.length - 1);
    return id.slice(0, -1) + String.fromCharCode(last === 0x7e ? 0x21 : last + 1);
}

// ---------------------------------------------------------------------------------------------
// Secrets: whsec_ + base64 of 24..64 random bytes, mostly from the seeded generator, some made by
// callhook (ch_secret_generate + ch_secret_format) so its text form is checked too.

function randomSecret(rng, pool) {
    if (pool.hmac.length > 0 && rng.chance(0.2)) return rng.pick(pool.hmac);
    let b64 = rng.bytes(rng.int(24, 64)).toString("base64");
    // The prefix and the padding are optional for both sides; leave them out now and then.
    if (rng.chance(0.1)) b64 = b64.replace(/=+$/, "");
    return rng.chance(0.95) ? `whsec_${b64}` : b64;
}

function isEd25519(key) {
    return key.startsWith("whsk_") || key.startsWith("whpk_");
}

// ---------------------------------------------------------------------------------------------
// The peer

function runPeer(peer, lines) {
    const input = lines.map((l) => l + "\n").join("");
    const res = spawnSync(peer, [], { input, encoding: "utf8", maxBuffer: 1 << 28 });
    if (res.error) die(`cannot run '${peer}': ${res.error.message}`);
    if (res.status !== 0)
        die(`'${peer}' exited with ${res.status ?? res.signal}:\n${res.stderr}`);
    if (res.stderr) process.stderr.write(res.stderr);
    const out = res.stdout.split("\n");
    if (out.pop() !== "" || out.length !== lines.length)
        die(`'${peer}' answered ${out.length} lines to ${lines.length} requests`);
    return out;
}

function peerSecrets(peer, rng) {
    const sizes = Array.from({ length: 24 }, () => rng.int(24, 64));
    const requests = [...sizes.map((n) => `secret\t${n}`), ...Array(8).fill("secret\ted25519")];
    const answers = runPeer(peer, requests);
    const pool = { hmac: [], ed25519: [] };
    answers.forEach((a, i) => {
        const ed = i >= sizes.length;
        const m = /^(whsec_|whsk_)([A-Za-z0-9+/]+={0,2})$/.exec(a);
        const want = ed ? 64 : sizes[i];
        if (!m || (m[1] === "whsk_") !== ed || Buffer.from(m[2], "base64").length !== want)
            die(`callhook made a malformed secret for '${requests[i]}': '${a}' (want ${want} bytes)`);
        (ed ? pool.ed25519 : pool.hmac).push(a);
    });
    return pool;
}

// ---------------------------------------------------------------------------------------------
// Cases

// Negative kinds: what changes between signing and verifying, and the reason both sides must
// give. "v1a only" is callhook signing with an Ed25519 key alone, which the libraries cannot
// check and must not accept.
const FORGERIES = [
    { kind: "tampered body", code: "ENOMATCH", message: "No matching signature found" },
    { kind: "wrong secret", code: "ENOMATCH", message: "No matching signature found" },
    { kind: "other msg id", code: "ENOMATCH", message: "No matching signature found" },
    { kind: "shifted timestamp", code: "ENOMATCH", message: "No matching signature found" },
    { kind: "too old", code: "ETOOOLD", message: "Message timestamp too old" },
    { kind: "too new", code: "ETOONEW", message: "Message timestamp too new" },
    { kind: "v1a only", code: null, message: "No matching signature found", callhookSigns: true },
];

function hex(s) {
    return Buffer.from(s, "utf8").toString("hex");
}

// A case before any signing: who signs with which keys over what, and what the verifier gets.
function makeCase(rng, pool, now, lib, direction, index, forgery) {
    const c = {
        lib: lib.name, direction, index, kind: forgery ? forgery.kind : "valid", forgery,
        now, id: randomMsgId(rng), ts: now + rng.int(-SKEW_S, SKEW_S), body: randomBody(rng, index),
    };
    const a = randomSecret(rng, pool);
    const shape = rng.weighted([[70, "one key"], [15, "sender rotates"], [15, "receiver rotates"]]);
    c.signKeys = [a];
    c.verifyKeys = [a];
    if (shape === "sender rotates") {
        c.signKeys = [a, randomSecret(rng, pool)];
        if (rng.chance(0.3)) c.signKeys.push(randomSecret(rng, pool));
        c.verifyKeys = [rng.pick(c.signKeys)];
    } else if (shape === "receiver rotates") {
        c.verifyKeys = [randomSecret(rng, pool), a];
        if (rng.chance(0.5)) c.verifyKeys.reverse();
    }
    // callhook may add an Ed25519 key when it signs: its v1a entry must be skipped, not fatal.
    if (direction === "callhook" && pool.ed25519.length > 0 && rng.chance(0.15)) {
        const at = rng.int(0, c.signKeys.length);
        c.signKeys.splice(at, 0, rng.pick(pool.ed25519));
    }
    // The libraries verify with one key: pick an HMAC one the sender used.
    if (direction === "callhook") c.verifyKeys = [rng.pick(c.verifyKeys.filter((k) => c.signKeys.includes(k)))];
    c.verifyId = c.id;
    c.verifyTs = c.ts;
    c.verifyBody = c.body;
    switch (forgery?.kind) {
    case undefined: break;
    case "tampered body": c.verifyBody = tamperBody(rng, c.body); break;
    case "wrong secret": c.verifyKeys = [randomSecret(rng, { hmac: [] })]; break;
    case "other msg id": c.verifyId = otherMsgId(rng, c.id); break;
    case "shifted timestamp": c.verifyTs = c.ts + rng.pick([-1, 1]); break;
    case "too old": c.ts = c.verifyTs = now - FAR_S - rng.int(0, 100000); break;
    case "too new": c.ts = c.verifyTs = now + FAR_S + rng.int(0, 100000); break;
    case "v1a only": c.signKeys = [rng.pick(pool.ed25519)]; break;
    default: die(`internal error: forgery '${forgery.kind}'`);
    }
    c.asBuffer = rng.chance(0.5); // payloads go to the libraries as string or Buffer
    c.headerSet = rng.pick(lib.headerSets);
    c.headerCase = rng.pick(["lower", "title", "upper"]);
    return c;
}

function libSign(lib, key, id, ts, body, asBuffer) {
    return new lib.Webhook(key).sign(id, new Date(ts * 1000), asBuffer ? Buffer.from(body, "utf8") : body);
}

function libVerify(lib, c, signature) {
    const names = c.headerSet.map((h) => c.headerCase === "upper" ? h.toUpperCase()
        : c.headerCase === "title" ? h.replace(/(^|-)([a-z])/g, (_, d, ch) => d + ch.toUpperCase()) : h);
    const headers = { [names[0]]: c.verifyId, [names[1]]: String(c.verifyTs), [names[2]]: signature };
    const payload = c.asBuffer ? Buffer.from(c.verifyBody, "utf8") : c.verifyBody;
    try {
        new lib.Webhook(c.verifyKeys[0]).verify(payload, headers, { jsonParse: false });
        return { ok: true };
    } catch (e) {
        return { ok: false, error: e };
    }
}

// The library signed, callhook verifies: returns the peer request.
function prepareLibToCallhook(lib, c) {
    c.signature = c.signKeys.map((k) => libSign(lib, k, c.id, c.ts, c.body, c.asBuffer)).join(" ");
    return ["verify", c.verifyKeys.join(" "), c.verifyId, String(c.verifyTs), c.signature, hex(c.verifyBody)].join("\t");
}

function checkLibToCallhook(lib, c, answer) {
    c.peerAnswer = answer;
    if (!c.forgery) return answer === "ok" ? null : `callhook rejected a ${lib.name} signature`;
    if (answer === "ok") return `callhook accepted a forgery (${c.kind})`;
    return answer.startsWith(`fail ${c.forgery.code}:`) ? null
        : `callhook rejected the forgery (${c.kind}) for the wrong reason, want ${c.forgery.code}`;
}

function prepareCallhookToLib(c) {
    return ["sign", c.signKeys.join(" "), c.id, String(c.ts), hex(c.body)].join("\t");
}

// callhook signed: the header must be one entry per key, each v1 entry identical to the
// library's own signature, and the library must accept it (or reject a forgery for the reason
// callhook would give).
function checkCallhookToLib(lib, c, answer, stats) {
    c.signature = answer;
    if (answer.startsWith("error ")) return "callhook could not sign";
    const entries = answer.split(" ");
    let mismatch = null;
    if (entries.length !== c.signKeys.length)
        mismatch = `callhook wrote ${entries.length} entries for ${c.signKeys.length} keys`;
    for (let i = 0; i < entries.length && mismatch === null; i++) {
        const key = c.signKeys[i];
        const want = isEd25519(key) ? null : libSign(lib, key, c.id, c.ts, c.body, c.asBuffer);
        if (want === null ? !/^v1a,[A-Za-z0-9+/]{86}==$/.test(entries[i]) : entries[i] !== want)
            mismatch = `entry ${i + 1} differs from ${want === null ? "a v1a entry" : `${lib.name}'s '${want}'`}`;
    }
    if (mismatch === null) stats.identical++;
    const r = libVerify(lib, c, answer);
    c.libAnswer = r.ok ? "accepted" : `${r.error?.name}: ${r.error?.message}`;
    let verdict = null;
    if (!c.forgery) verdict = r.ok ? null : `${lib.name} rejected a callhook signature`;
    else if (r.ok) verdict = `${lib.name} accepted a forgery (${c.kind})`;
    else if (!(r.error instanceof lib.VerificationError) || r.error.message !== c.forgery.message)
        verdict = `${lib.name} rejected the forgery (${c.kind}) for the wrong reason, want '${c.forgery.message}'`;
    return [mismatch, verdict].filter((x) => x !== null).join("; ") || null;
}

// ---------------------------------------------------------------------------------------------
// Reporting

function show(s, max = 400) {
    const j = JSON.stringify(s);
    return j.length > max ? `${j.slice(0, max)}… (${j.length} characters in all)` : j;
}

function printCase(c, reason, replay) {
    const signer = c.direction === "library" ? c.lib : "callhook";
    const verifier = c.direction === "library" ? "callhook" : c.lib;
    const lines = [
        `interop: FAIL ${signer} → ${verifier}, case ${c.index} (${c.kind}): ${reason}`,
        `  sign keys:     ${c.signKeys.join(" ")}`,
        `  verify keys:   ${c.verifyKeys.join(" ")}`,
        `  webhook-id:    ${show(c.id)}${c.verifyId !== c.id ? ` (verified as ${show(c.verifyId)})` : ""}`,
        `  timestamp:     ${c.ts}${c.verifyTs !== c.ts ? ` (verified as ${c.verifyTs})` : ""}, now ${c.now}`,
        `  body:          ${Buffer.byteLength(c.body)} bytes, ${show(c.body)}`,
        `  body hex:      ${show(hex(c.body), 2000)}`,
    ];
    if (c.verifyBody !== c.body) lines.push(`  verified body: ${show(c.verifyBody)}`);
    lines.push(`  payload as:    ${c.asBuffer ? "Buffer" : "string"}, headers ${c.headerSet.join(", ")} (${c.headerCase})`);
    lines.push(`  signature:     ${c.signature}`);
    if (c.peerAnswer !== undefined) lines.push(`  callhook said: ${c.peerAnswer}`);
    if (c.libAnswer !== undefined) lines.push(`  ${c.lib} said: ${c.libAnswer}`);
    lines.push(`  replay:        ${replay}`);
    console.error(lines.join("\n"));
}

// ---------------------------------------------------------------------------------------------

async function main() {
    const started = Date.now();
    const opts = parseArgs(process.argv.slice(2));
    checkInstalled();
    const libs = [];
    for (const name of opts.libraries) libs.push(await loadLibrary(name));

    let seed = randomBytes(4).readUInt32LE(0);
    if (process.env.INTEROP_SEED) {
        seed = Number(process.env.INTEROP_SEED);
        if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
            die(`INTEROP_SEED must be a whole number from 0 to 4294967295, not '${process.env.INTEROP_SEED}'`);
    }
    const replay = `INTEROP_SEED=${seed} node ${join(HERE, "interop.mjs")} ${opts.libraries.map((l) => `--library ${l}`).join(" ")} --cases ${opts.cases} ${opts.peer}`;
    console.log(`interop: seed ${seed}, ${opts.cases} cases per direction, against ${libs.map((l) => `${l.name} ${l.version}`).join(", ")}`);
    console.log(`interop: replay with ${replay}`);
    const rng = makeRng(seed);
    const pool = peerSecrets(opts.peer, rng);

    // Build every case, sign the library's side now, and ask callhook everything in one run.
    const now = Math.floor(Date.now() / 1000);
    const negatives = Math.max(FORGERIES.length, Math.round(opts.cases / 10));
    const cases = [];
    for (const lib of libs) {
        for (const direction of ["library", "callhook"]) {
            const forgeries = FORGERIES.filter((f) => direction === "callhook" || !f.callhookSigns);
            for (let i = 0; i < opts.cases + negatives; i++) {
                const forgery = i < opts.cases ? null : forgeries[(i - opts.cases) % forgeries.length];
                cases.push({ lib, c: makeCase(rng, pool, now, lib, direction, i, forgery) });
            }
        }
    }
    const requests = cases.map(({ lib, c }) => c.direction === "library" ? prepareLibToCallhook(lib, c) : prepareCallhookToLib(c));
    const answers = runPeer(opts.peer, requests);
    if (Math.abs(Math.floor(Date.now() / 1000) - now) > TOLERANCE_S - SKEW_S - 5)
        die("the run took too long for its timestamps to stay in the window; use fewer cases");

    const stats = new Map();
    const failures = [];
    cases.forEach(({ lib, c }, i) => {
        const key = `${c.direction === "library" ? `${lib.name} → callhook` : `callhook → ${lib.name}`}`;
        if (!stats.has(key)) stats.set(key, { valid: 0, validOk: 0, forged: 0, forgedOk: 0, identical: 0 });
        const s = stats.get(key);
        const reason = c.direction === "library" ? checkLibToCallhook(lib, c, answers[i]) : checkCallhookToLib(lib, c, answers[i], s);
        if (c.forgery) {
            s.forged++;
            if (!reason) s.forgedOk++;
        } else {
            s.valid++;
            if (!reason) s.validOk++;
        }
        if (reason) failures.push({ c, reason });
    });

    for (const [key, s] of stats) {
        const identical = key.startsWith("callhook") ? `, ${s.identical}/${s.valid + s.forged} headers identical to the library's` : "";
        console.log(`  ${key.padEnd(30)} ${s.validOk}/${s.valid} valid accepted, ${s.forgedOk}/${s.forged} forgeries rejected${identical}`);
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (failures.length > 0) {
        printCase(failures[0].c, failures[0].reason, replay);
        for (const f of failures.slice(1, 10))
            console.error(`interop: also ${f.c.direction === "library" ? `${f.c.lib} → callhook` : `callhook → ${f.c.lib}`} case ${f.c.index} (${f.c.kind}): ${f.reason}`);
        die(`${failures.length} of ${cases.length} cases failed (seed ${seed}, ${seconds} s)`);
    }
    console.log(`interop: ok, ${cases.length} cases in ${seconds} s`);
}

await main();
