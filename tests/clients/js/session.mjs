// A full session between two users, driven by matrix-js-sdk against a
// running server: profile and avatar, a room with an alias, invite, join,
// message, reaction, thread reply, typing, read receipt, edit, redaction,
// search and leave. Every step is checked on the other user's client, in
// the state the SDK built from its own /sync loop.
//
// Usage: node session.mjs HOMESERVER_URL SHARED_SECRET

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

import { AVATAR_PNG, assert, passwordClient, register, step, suffix, until } from "./common.mjs";

const [baseUrl, secret] = process.argv.slice(2);
if (!baseUrl || !secret) {
    console.error("usage: node session.mjs HOMESERVER_URL SHARED_SECRET");
    process.exit(2);
}
// The SDK's own debug logging drowns the steps; its warnings stay.
logger.setLevel("warn");

async function login(user, password) {
    const client = await passwordClient(sdk, baseUrl, user, password, "matrix-js-sdk session test");
    client.on(sdk.ClientEvent.SyncUnexpectedError, (error) => console.error("sync error:", error));
    // As Element does: thread replies live in their threads, not in the main timeline.
    await client.startClient({ initialSyncLimit: 30, threadSupport: true });
    await until(`${user}'s first sync`, () => ["PREPARED", "SYNCING"].includes(client.getSyncState()));
    return client;
}

/** The event with `eventId` in `client`'s copy of the room, once its sync has it. */
function seen(client, roomId, eventId) {
    return client.getRoom(roomId)?.findEventById(eventId);
}

async function main() {
    const tag = suffix();
    const password = `pw-${tag}-${suffix()}`;
    await register(baseUrl, secret, `alice${tag}`, password);
    await register(baseUrl, secret, `bob${tag}`, password);
    const alice = await login(`alice${tag}`, password);
    const bob = await login(`bob${tag}`, password);
    const aliceId = alice.getUserId();
    const bobId = bob.getUserId();
    try {
        // Profile: a display name and an avatar from uploaded media.
        const { content_uri: avatarMxc } = await alice.uploadContent(AVATAR_PNG, {
            name: "avatar.png",
            type: "image/png",
        });
        assert(avatarMxc.startsWith("mxc://"), `upload gave ${avatarMxc}`);
        await alice.setDisplayName("Alice Liddell");
        await alice.setAvatarUrl(avatarMxc);
        step("profile set");

        // A room with an alias.
        const aliasName = `tea-${tag}`;
        const alias = `#${aliasName}:${alice.getDomain()}`;
        const { room_id: roomId } = await alice.createRoom({
            name: "Tea party",
            room_alias_name: aliasName,
            preset: sdk.Preset.PrivateChat,
        });
        await until("alice's sync shows the room's canonical alias", () =>
            alice.getRoom(roomId)?.getCanonicalAlias() === alias,
        );
        const resolved = await bob.getRoomIdForAlias(alias);
        assert(resolved.room_id === roomId, `alias resolved to ${resolved.room_id}`);
        step("room created with an alias");

        // Invite: Bob's sync shows the invite with the room's name.
        await alice.invite(roomId, bobId);
        await until("bob's sync shows the invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
        assert(bob.getRoom(roomId).name === "Tea party", `invite shows name ${bob.getRoom(roomId).name}`);
        step("invite seen");

        // Join through the alias; each sees the other's membership and Bob sees Alice's profile.
        await bob.joinRoom(alias);
        await until("alice's sync shows bob joined", () =>
            alice.getRoom(roomId)?.getMember(bobId)?.membership === "join",
        );
        await until("bob's sync shows his join", () => bob.getRoom(roomId)?.getMyMembership() === "join");
        await until("bob's sync shows alice's display name and avatar", () => {
            const member = bob.getRoom(roomId)?.getMember(aliceId);
            return member?.name === "Alice Liddell" && member?.getMxcAvatarUrl() === avatarMxc;
        });
        // Bob downloads the avatar through authenticated media.
        const avatarUrl = bob.mxcUrlToHttp(avatarMxc, undefined, undefined, undefined, false, true, true);
        const download = await fetch(avatarUrl, { headers: { authorization: `Bearer ${bob.getAccessToken()}` } });
        assert(download.status === 200, `avatar download: ${download.status}`);
        assert(Buffer.from(await download.arrayBuffer()).equals(AVATAR_PNG), "the avatar's bytes differ");
        assert(download.headers.get("content-type") === "image/png", download.headers.get("content-type"));
        step("join seen, profile and avatar seen");

        // A message.
        const { event_id: helloId } = await alice.sendTextMessage(roomId, "Hello Bob, tea?");
        await until("bob's sync shows the message", () => seen(bob, roomId, helloId)?.getContent().body === "Hello Bob, tea?");
        assert(seen(bob, roomId, helloId).getSender() === aliceId, "sender");
        step("message seen");

        // A reaction.
        const { event_id: reactionId } = await bob.sendEvent(roomId, "m.reaction", {
            "m.relates_to": { rel_type: "m.annotation", event_id: helloId, key: "🍵" },
        });
        await until("alice's sync shows the reaction", () => {
            const relation = seen(alice, roomId, reactionId)?.getRelation();
            return relation?.rel_type === "m.annotation" && relation.event_id === helloId && relation.key === "🍵";
        });
        step("reaction seen");

        // A reply in a thread rooted at the message.
        const { event_id: threadReplyId } = await bob.sendEvent(roomId, "m.room.message", {
            msgtype: "m.text",
            body: "Yes please, Earl Grey",
            "m.relates_to": {
                rel_type: "m.thread",
                event_id: helloId,
                is_falling_back: true,
                "m.in_reply_to": { event_id: helloId },
            },
        });
        await until("alice's sync shows the thread reply", () => {
            const reply = seen(alice, roomId, threadReplyId);
            return reply?.getContent().body === "Yes please, Earl Grey" && reply.threadRootId === helloId;
        });
        await until("alice's client files the reply in the message's thread", () =>
            alice.getRoom(roomId).getThread(helloId)?.events.some((e) => e.getId() === threadReplyId),
        );
        const thread = await alice.relations(roomId, helloId, "m.thread");
        assert(
            thread.events.some((e) => e.getId() === threadReplyId),
            `/relations of the root: ${thread.events.map((e) => e.getId())}`,
        );
        step("thread reply seen");

        // Typing, started and stopped.
        await alice.sendTyping(roomId, true, 30_000);
        await until("bob's sync shows alice typing", () => bob.getRoom(roomId)?.getMember(aliceId)?.typing === true);
        await alice.sendTyping(roomId, false, 0);
        await until("bob's sync shows alice stopped typing", () => bob.getRoom(roomId)?.getMember(aliceId)?.typing === false);
        step("typing seen");

        // A read receipt (the SDK synthesizes receipts for its own events: ask for real ones).
        await bob.sendReadReceipt(seen(bob, roomId, helloId));
        await until("alice's sync shows bob's read receipt", () =>
            alice.getRoom(roomId)?.getReadReceiptForUserId(bobId, true)?.eventId === helloId,
        );
        step("read receipt seen");

        // An edit: Bob's client shows the new content on the original event.
        const { event_id: editId } = await alice.sendEvent(roomId, "m.room.message", {
            msgtype: "m.text",
            body: "* Hello Bob, tea or coffee?",
            "m.new_content": { msgtype: "m.text", body: "Hello Bob, tea or coffee?" },
            "m.relates_to": { rel_type: "m.replace", event_id: helloId },
        });
        await until("bob's sync applies the edit", () => {
            const original = seen(bob, roomId, helloId);
            return original?.replacingEventId() === editId && original.getContent().body === "Hello Bob, tea or coffee?";
        });
        step("edit seen");

        // A redaction.
        const { event_id: secretId } = await alice.sendTextMessage(roomId, "the secret recipe is lapsang");
        await until("bob's sync shows the secret", () => seen(bob, roomId, secretId)?.getContent().body);
        await alice.redactEvent(roomId, secretId, undefined, { reason: "oops" });
        await until("bob's sync shows the redaction", () => {
            const redacted = seen(bob, roomId, secretId);
            return redacted?.isRedacted() && redacted.getContent().body === undefined;
        });
        step("redaction seen");

        // Search: the thread reply is found; the redacted text is not.
        const found = await bob.searchRoomEvents({ term: "Earl Grey" });
        assert(
            found.results.some((r) => r.context.getEvent().getId() === threadReplyId),
            `search for the reply: ${found.results.map((r) => r.context.getEvent().getId())}`,
        );
        const redactedSearch = await bob.searchRoomEvents({ term: "lapsang" });
        assert(redactedSearch.results.length === 0, "the redacted text is still found");
        step("search");

        // Leave: Alice sees it; Bob sees nothing Alice sends afterwards.
        await bob.leave(roomId);
        await until("alice's sync shows bob left", () =>
            alice.getRoom(roomId)?.getMember(bobId)?.membership === "leave",
        );
        await until("bob's sync shows he left", () => bob.getRoom(roomId)?.getMyMembership() === "leave");
        const { event_id: afterId } = await alice.sendTextMessage(roomId, "more darjeeling after you left");
        await until("alice's sync shows her later message", () => seen(alice, roomId, afterId));
        const refused = await bob.fetchRoomEvent(roomId, afterId).then(
            () => null,
            (error) => error,
        );
        assert(refused && [403, 404].includes(refused.httpStatus), `bob fetched a later event: ${refused}`);
        const laterSearch = await bob.searchRoomEvents({ term: "darjeeling" });
        assert(laterSearch.results.length === 0, "bob's search finds a later event");
        step("leave seen, nothing later visible");

        console.log("js-sdk session complete");
    } finally {
        alice.stopClient();
        bob.stopClient();
    }
}

main().then(
    () => process.exit(0),
    (error) => {
        console.error(error);
        process.exit(1);
    },
);
