// Helpers shared by the JavaScript client tests.

import { createHmac, randomBytes } from "node:crypto";

// matrix-js-sdk 37 calls Promise.withResolvers, which Node has from 22 on.
Promise.withResolvers ??= function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
        resolve = res;
        reject = rej;
    });
    return { promise, resolve, reject };
};

/** Synapse-compatible shared-secret registration (nonce + HMAC-SHA1). */
export async function register(baseUrl, secret, username, password) {
    const endpoint = `${baseUrl}/_synapse/admin/v1/register`;
    const { nonce } = await (await fetch(endpoint)).json();
    const mac = createHmac("sha1", secret)
        .update([nonce, username, password, "notadmin"].join("\0"))
        .digest("hex");
    const response = await fetch(endpoint, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ nonce, username, password, admin: false, mac }),
    });
    if (response.status !== 200) {
        throw new Error(`register ${username}: ${response.status} ${await response.text()}`);
    }
    return response.json();
}

export function suffix() {
    return randomBytes(4).toString("hex");
}

/**
 * Resolves once `check()` returns a truthy value, re-checking every 50 ms;
 * fails with `what` after `ms`. This waits for a condition, it asserts no speed.
 */
export async function until(what, check, ms = 30_000) {
    const deadline = Date.now() + ms;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
}

export function assert(condition, message) {
    if (!condition) throw new Error(`assertion failed: ${message}`);
}

/** A 2×2 red PNG: a real image for the avatar upload. */
export const AVATAR_PNG = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg==",
    "base64",
);

/** Prints one passed step of a client test. */
export function step(name) {
    console.log(`ok: ${name}`);
}

/** A matrix-js-sdk client logged in with a password, not yet syncing. */
export async function passwordClient(sdk, baseUrl, user, password, deviceName) {
    const anonymous = sdk.createClient({ baseUrl });
    const session = await anonymous.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user },
        password,
        initial_device_display_name: deviceName,
    });
    return sdk.createClient({
        baseUrl,
        accessToken: session.access_token,
        userId: session.user_id,
        deviceId: session.device_id,
    });
}
