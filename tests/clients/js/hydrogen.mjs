// Builds the hydrogen-view-sdk page with vite, serves it, and drives headless
// Chromium through it: the page logs in as the viewer, syncs and renders a
// room's timeline; every expected text must appear in the DOM. The driver
// then saves a screenshot of the page to OUT_DIR/timeline.png.
//
// Usage: node hydrogen.mjs HOMESERVER_URL USER PASSWORD ROOM_ID OUT_DIR TEXT...

import { copyFile, mkdir, readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";
import { build } from "vite";

const [homeserver, user, password, roomId, outDir, ...texts] = process.argv.slice(2);
if (!outDir || texts.length === 0) {
    console.error("usage: node hydrogen.mjs HOMESERVER_URL USER PASSWORD ROOM_ID OUT_DIR TEXT...");
    process.exit(2);
}
const here = fileURLToPath(new URL(".", import.meta.url));
const site = join(outDir, "site");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
};

/** Serves the built site; resolves with its port. */
function serve(root) {
    const server = createServer(async (request, response) => {
        const path = normalize(decodeURIComponent(new URL(request.url, "http://page").pathname));
        const file = join(root, path === "/" ? "index.html" : path);
        try {
            const body = await readFile(file);
            response.writeHead(200, { "content-type": CONTENT_TYPES[extname(file)] ?? "application/octet-stream" });
            response.end(body);
        } catch {
            response.writeHead(404).end();
        }
    });
    return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

async function main() {
    await mkdir(outDir, { recursive: true });
    await build({
        root: join(here, "hydrogen"),
        base: "./",
        logLevel: "error",
        publicDir: false,
        build: { outDir: site, emptyOutDir: true, chunkSizeWarningLimit: 4096 },
    });
    // Hydrogen's service worker serves authenticated media; it must sit at the site's root.
    await copyFile(join(here, "node_modules/hydrogen-view-sdk/lib-build/sw.js"), join(site, "sw.js"));
    const server = await serve(site);
    const browser = await chromium.launch({
        executablePath: chromiumPath,
        args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    try {
        const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
        page.on("console", (message) => console.log(`page ${message.type()}: ${message.text()}`));
        page.on("pageerror", (error) => console.log(`page error: ${error}`));
        page.on("response", (response) => {
            if (response.status() >= 400) console.log(`page got ${response.status()}: ${response.url()}`);
        });
        const query = new URLSearchParams({ homeserver, user, password, room: roomId });
        await page.goto(`http://127.0.0.1:${server.address().port}/?${query}`);
        await page.waitForFunction(() => window.hydrogenStatus, null, { timeout: 60_000 });
        const status = await page.evaluate(() => window.hydrogenStatus);
        if (status !== "ready") throw new Error(`the page failed: ${status}`);
        for (const text of texts) {
            await page.waitForFunction((t) => document.querySelector("#app").innerText.includes(t), text, {
                timeout: 30_000,
            });
            console.log(`rendered: ${text}`);
        }
        const screenshot = join(outDir, "timeline.png");
        await page.screenshot({ path: screenshot, fullPage: true });
        console.log(`screenshot: ${screenshot}`);
    } finally {
        await browser.close();
        server.close();
    }
}

main().then(
    () => process.exit(0),
    (error) => {
        console.error(error);
        process.exit(1);
    },
);
