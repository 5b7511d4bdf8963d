// Simplified sliding sync (MSC4186) driven by matrix-js-sdk's SlidingSync
// against a running server: Bob's client syncs only through a sliding
// window over his rooms and sees, in the state the SDK builds, a room with
// Alice's messages (one sent while it long-polls), an invite with its
// stripped state, and that room once he joins it.
//
// Usage: node sliding_sync.mjs HOMESERVER_URL SHARED_SECRET

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";
import { SlidingSync } from "matrix-js-sdk/lib/sliding-sync.js";

import { assert, passwordClient, register, step, suffix, until } from "./common.mjs";

const [baseUrl, secret] = process.argv.slice(2);
if (!baseUrl || !secret) {
    console.error("usage: node sliding_sync.mjs HOMESERVER_URL SHARED_SECRET");
    process.exit(2);
}
logger.setLevel("warn");

function login(user, password) {
    return passwordClient(sdk, baseUrl, user, password, "matrix-js-sdk sliding sync test");
}

/** Bob joins over plain HTTP: the SDK's joinRoom expects the /sync loop. */
async function join(client, roomId) {
    const response = await fetch(`${baseUrl}/_matrix/client/v3/join/${encodeURIComponent(roomId)}`, {
        method: "POST",
        headers: { authorization: `Bearer ${client.getAccessToken()}`, "content-type": "application/json" },
        body: "{}",
    });
    assert(response.status === 200, `join ${roomId}: ${response.status} ${await response.text()}`);
}

/** The bodies of the messages in the client's live timeline of a room. */
function bodies(client, roomId) {
    const room = client.getRoom(roomId);
    if (!room) return [];
    return room
        .getLiveTimeline()
        .getEvents()
        .filter((e) => e.getType() === "m.room.message")
        .map((e) => e.getContent().body);
}

async function main() {
    const tag = suffix();
    const password = `pw-${tag}-${suffix()}`;
    await register(baseUrl, secret, `alice${tag}`, password);
    await register(baseUrl, secret, `bob${tag}`, password);
    const alice = await login(`alice${tag}`, password);
    const bob = await login(`bob${tag}`, password);
    const bobId = bob.getUserId();

    assert(
        await bob.doesServerSupportUnstableFeature("org.matrix.simplified_msc3575"),
        "/versions does not advertise simplified sliding sync",
    );

    // A room Bob is in, with a message from Alice; another he is invited to.
    const { room_id: gardenId } = await alice.createRoom({ name: "Garden", preset: sdk.Preset.PrivateChat });
    await alice.invite(gardenId, bobId);
    await join(bob, gardenId);
    await alice.sendTextMessage(gardenId, "The roses are out");
    const { room_id: partyId } = await alice.createRoom({ name: "Garden party", preset: sdk.Preset.PrivateChat });
    await alice.invite(partyId, bobId);

    const roomConfig = {
        timeline_limit: 10,
        required_state: [
            ["*", "*"],
            ["m.room.member", "$LAZY"],
        ],
    };
    const lists = new Map([["all", { ranges: [[0, 19]], ...roomConfig }]]);
    const slidingSync = new SlidingSync(baseUrl, lists, roomConfig, bob, 10_000);
    await bob.startClient({ slidingSync });
    try {
        await until("bob's sliding sync shows alice's message", () =>
            bodies(bob, gardenId).includes("The roses are out"),
        );
        assert(bob.getRoom(gardenId).name === "Garden", `room name ${bob.getRoom(gardenId).name}`);
        step("room list with alice's message");

        await until("bob's sliding sync shows the invite", () => bob.getRoom(partyId)?.getMyMembership() === "invite");
        const invited = bob.getRoom(partyId);
        assert(invited.name === "Garden party", `invite name ${invited.name}`);
        assert(invited.getMember(bobId)?.events.member?.getSender() === alice.getUserId(), "the invite's sender");
        await until("the list counts both rooms", () => slidingSync.getListData("all")?.joinedCount === 2);
        step("invite with its stripped state");

        // A message while the client long-polls.
        await alice.sendTextMessage(gardenId, "And the tulips");
        await until("bob's long poll brings the new message", () => bodies(bob, gardenId).includes("And the tulips"));
        step("long poll woke for a new message");

        // Accepting the invite brings the room whole.
        await join(bob, partyId);
        await alice.sendTextMessage(partyId, "Welcome, Bob");
        await until("bob's sliding sync shows the joined room's message", () =>
            bodies(bob, partyId).includes("Welcome, Bob"),
        );
        assert(bob.getRoom(partyId).getMyMembership() === "join", "bob's membership after joining");
        step("joined the invited room");

        console.log("js-sdk sliding sync complete");
    } finally {
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
