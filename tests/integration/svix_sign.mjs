// Signs a body with the npm `svix` package, as a Svix-based sender would, for test_receive.py.
//
// usage: node svix_sign.mjs SECRET WEBHOOK_ID TIMESTAMP BODY_FILE
// prints the svix-signature (= webhook-signature) header value, e.g. "v1,g0hM9Ss...".
//
// svix comes from tests/interop/node_modules (installed from the committed lockfile by
// `make test-deps`); its absence is an error, never a skip.

import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const INTEROP = join(HERE, "..", "interop");
const PINNED = "2.5.0";

function die(message) {
    console.error(`svix_sign: ${message}`);
    process.exit(2);
}

const [secret, msgId, timestamp, bodyFile] = process.argv.slice(2);
if (bodyFile === undefined || !/^[0-9]+$/.test(timestamp ?? ""))
    die("usage: node svix_sign.mjs SECRET WEBHOOK_ID TIMESTAMP BODY_FILE");

const manifest = join(INTEROP, "node_modules", "svix", "package.json");
if (!existsSync(manifest))
    die(`'${manifest}' is missing: run \`make test-deps\` (npm ci --prefix tests/interop) first`);
const version = JSON.parse(readFileSync(manifest, "utf8")).version;
if (version !== PINNED)
    die(`svix ${version} is installed but package-lock.json pins ${PINNED}: run \`make test-deps\``);

// Resolve "svix" as tests/interop would, then load it as the ES module it is.
const entry = createRequire(join(INTEROP, "package.json")).resolve("svix");
const svix = await import(pathToFileURL(entry).href);
const Webhook = svix.Webhook ?? svix.default?.Webhook;
if (typeof Webhook !== "function") die("svix does not export Webhook");

// svix signs strings (a Buffer is turned into a UTF-8 string first): the bodies are UTF-8.
const body = readFileSync(bodyFile, "utf8");
process.stdout.write(new Webhook(secret).sign(msgId, new Date(Number(timestamp) * 1000), body) + "\n");
