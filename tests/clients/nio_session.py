"""A full session between two users, driven by matrix-nio against a running
server: profile and avatar, a room with an alias, invite, join, message,
reaction, thread reply, typing, read receipt, edit, redaction, search and
leave. Every step is checked on the other user's client, in the state nio
built from its own /sync responses.

Usage: nio_session.py HOMESERVER_URL SHARED_SECRET
"""

import asyncio
import base64
import json
import secrets
import sys
import time
from collections import defaultdict

from nio import (
    AsyncClient,
    DownloadError,
    Event,
    ProfileGetResponse,
    ReactionEvent,
    RedactionEvent,
    RoomCreateResponse,
    RoomGetEventError,
    RoomMessageText,
    RoomResolveAliasResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)

from nio.api import RelationshipType
from nio_flow import login, register

# A 2×2 red PNG: a real image for the avatar upload.
AVATAR_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg=="
)


class Observer:
    """One user's client and what its /sync responses delivered."""

    def __init__(self, client: AsyncClient):
        self.client = client
        self.events: dict[str, dict[str, Event]] = defaultdict(dict)
        self.left: set[str] = set()
        client.add_event_callback(self._on_event, Event)

    async def _on_event(self, room, event) -> None:
        self.events[room.room_id][event.event_id] = event

    async def until(self, what: str, check, seconds: float = 30.0):
        """Syncs until `check()` holds; fails with `what` after the deadline.
        This waits for a condition, it asserts no speed."""
        deadline = time.monotonic() + seconds
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {what}")
            response = await self.client.sync(timeout=1000, since=self.client.next_batch)
            assert isinstance(response, SyncResponse), response
            self.left.update(response.rooms.leave)

    def event(self, room_id: str, event_id: str):
        return self.events[room_id].get(event_id)


def step(name: str) -> None:
    print(f"ok: {name}", flush=True)


async def send(client: AsyncClient, room_id: str, event_type: str, content: dict) -> str:
    sent = await client.room_send(room_id, event_type, content)
    assert isinstance(sent, RoomSendResponse), sent
    return sent.event_id


async def search(client: AsyncClient, term: str) -> list:
    """/search has no nio method; the request goes through nio's HTTP session."""
    response = await client.send(
        "POST",
        "/_matrix/client/v3/search",
        json.dumps({"search_categories": {"room_events": {"search_term": term}}}),
        headers={"Authorization": f"Bearer {client.access_token}", "Content-Type": "application/json"},
    )
    assert response.status == 200, (response.status, await response.text())
    body = await response.json()
    return [result["result"]["event_id"] for result in body["search_categories"]["room_events"]["results"]]


async def main(base_url: str, secret: str) -> None:
    tag = secrets.token_hex(4)
    password = secrets.token_urlsafe(16)
    register(base_url, secret, f"alice{tag}", password)
    register(base_url, secret, f"bob{tag}", password)
    alice = Observer(await login(base_url, f"alice{tag}", password))
    bob = Observer(await login(base_url, f"bob{tag}", password))
    alice_id, bob_id = alice.client.user_id, bob.client.user_id
    try:
        for observer in (alice, bob):
            first = await observer.client.sync(timeout=0)
            assert isinstance(first, SyncResponse), first

        # Profile: a display name and an avatar from uploaded media.
        uploaded, _ = await alice.client.upload(
            lambda *_: AVATAR_PNG, content_type="image/png", filename="avatar.png", filesize=len(AVATAR_PNG)
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        avatar_mxc = uploaded.content_uri
        await alice.client.set_displayname("Alice Liddell")
        await alice.client.set_avatar(avatar_mxc)
        profile = await bob.client.get_profile(alice_id)
        assert isinstance(profile, ProfileGetResponse), profile
        assert (profile.displayname, profile.avatar_url) == ("Alice Liddell", avatar_mxc), profile
        step("profile set")

        # A room with an alias.
        server_name = alice_id.split(":", 1)[1]
        alias = f"#tea-{tag}:{server_name}"
        created = await alice.client.room_create(alias=f"tea-{tag}", name="Tea party")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await alice.until(
            "alice's sync shows the canonical alias",
            lambda: room_id in alice.client.rooms and alice.client.rooms[room_id].canonical_alias == alias,
        )
        resolved = await bob.client.room_resolve_alias(alias)
        assert isinstance(resolved, RoomResolveAliasResponse) and resolved.room_id == room_id, resolved
        step("room created with an alias")

        # Invite: Bob's sync shows it with the room's name.
        await alice.client.room_invite(room_id, bob_id)
        await bob.until("bob's sync shows the invite", lambda: room_id in bob.client.invited_rooms)
        assert bob.client.invited_rooms[room_id].name == "Tea party", bob.client.invited_rooms[room_id].name
        step("invite seen")

        # Join through the alias; Alice sees the join and Bob sees Alice's profile.
        joined = await bob.client.join(alias)
        assert getattr(joined, "room_id", None) == room_id, joined
        await alice.until("alice's sync shows bob joined", lambda: bob_id in alice.client.rooms[room_id].users)
        await bob.until("bob's sync shows the joined room", lambda: room_id in bob.client.rooms)
        bob_room = bob.client.rooms[room_id]
        await bob.until(
            "bob's sync shows alice's display name and avatar",
            lambda: bob_room.user_name(alice_id) == "Alice Liddell" and bob_room.avatar_url(alice_id) == avatar_mxc,
        )
        downloaded = await bob.client.download(avatar_mxc)
        assert not isinstance(downloaded, DownloadError), downloaded
        assert downloaded.body == AVATAR_PNG and downloaded.content_type == "image/png", downloaded
        step("join seen, profile and avatar seen")

        # A message.
        hello_id = await send(alice.client, room_id, "m.room.message", {"msgtype": "m.text", "body": "Hello Bob, tea?"})
        await bob.until("bob's sync shows the message", lambda: bob.event(room_id, hello_id))
        hello = bob.event(room_id, hello_id)
        assert isinstance(hello, RoomMessageText) and hello.body == "Hello Bob, tea?" and hello.sender == alice_id
        step("message seen")

        # A reaction.
        reaction_id = await send(
            bob.client,
            room_id,
            "m.reaction",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": hello_id, "key": "🍵"}},
        )
        await alice.until("alice's sync shows the reaction", lambda: alice.event(room_id, reaction_id))
        reaction = alice.event(room_id, reaction_id)
        assert isinstance(reaction, ReactionEvent), reaction
        assert (reaction.reacts_to, reaction.key) == (hello_id, "🍵"), reaction
        step("reaction seen")

        # A reply in a thread rooted at the message.
        reply_id = await send(
            bob.client,
            room_id,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "Yes please, Earl Grey",
                "m.relates_to": {
                    "rel_type": "m.thread",
                    "event_id": hello_id,
                    "is_falling_back": True,
                    "m.in_reply_to": {"event_id": hello_id},
                },
            },
        )
        await alice.until("alice's sync shows the thread reply", lambda: alice.event(room_id, reply_id))
        relates_to = alice.event(room_id, reply_id).source["content"]["m.relates_to"]
        assert (relates_to["rel_type"], relates_to["event_id"]) == ("m.thread", hello_id), relates_to
        in_thread = [e.event_id async for e in alice.client.room_get_event_relations(room_id, hello_id, RelationshipType.thread)]
        assert in_thread == [reply_id], in_thread
        step("thread reply seen")

        # Typing, started and stopped.
        await alice.client.room_typing(room_id, True, 30_000)
        await bob.until("bob's sync shows alice typing", lambda: alice_id in bob_room.typing_users)
        await alice.client.room_typing(room_id, False)
        await bob.until("bob's sync shows alice stopped typing", lambda: alice_id not in bob_room.typing_users)
        step("typing seen")

        # A read receipt on the main timeline (nio sends thread_id "main").
        await bob.client.update_receipt_marker(room_id, hello_id)
        alice_room = alice.client.rooms[room_id]
        await alice.until(
            "alice's sync shows bob's read receipt",
            lambda: getattr(alice_room.threaded_read_receipts.get(bob_id, {}).get("main"), "event_id", None) == hello_id,
        )
        step("read receipt seen")

        # An edit.
        edit_id = await send(
            alice.client,
            room_id,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "* Hello Bob, tea or coffee?",
                "m.new_content": {"msgtype": "m.text", "body": "Hello Bob, tea or coffee?"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": hello_id},
            },
        )
        await bob.until("bob's sync shows the edit", lambda: bob.event(room_id, edit_id))
        content = bob.event(room_id, edit_id).source["content"]
        assert content["m.relates_to"] == {"rel_type": "m.replace", "event_id": hello_id}, content
        assert content["m.new_content"]["body"] == "Hello Bob, tea or coffee?", content
        step("edit seen")

        # A redaction: Bob's sync carries it, and the event is served redacted.
        secret_id = await send(
            alice.client, room_id, "m.room.message", {"msgtype": "m.text", "body": "the secret recipe is lapsang"}
        )
        await bob.until("bob's sync shows the secret", lambda: bob.event(room_id, secret_id))
        redacted = await alice.client.room_redact(room_id, secret_id, reason="oops")
        redaction_id = redacted.event_id
        await bob.until("bob's sync shows the redaction", lambda: bob.event(room_id, redaction_id))
        redaction = bob.event(room_id, redaction_id)
        assert isinstance(redaction, RedactionEvent) and redaction.redacts == secret_id, redaction
        fetched = await bob.client.room_get_event(room_id, secret_id)
        assert "body" not in fetched.event.source["content"], fetched.event.source
        step("redaction seen")

        # Search: the thread reply is found; the redacted text is not.
        found = await search(bob.client, "Earl Grey")
        assert reply_id in found, found
        assert await search(bob.client, "lapsang") == [], "the redacted text is still found"
        step("search")

        # Leave: Alice sees it; Bob sees nothing Alice sends afterwards.
        await bob.client.room_leave(room_id)
        await alice.until("alice's sync shows bob left", lambda: bob_id not in alice_room.users)
        await bob.until("bob's sync shows he left", lambda: room_id in bob.left)
        after_id = await send(
            alice.client, room_id, "m.room.message", {"msgtype": "m.text", "body": "more darjeeling after you left"}
        )
        await alice.until("alice's sync shows her later message", lambda: alice.event(room_id, after_id))
        refused = await bob.client.room_get_event(room_id, after_id)
        assert isinstance(refused, RoomGetEventError), refused
        assert await search(bob.client, "darjeeling") == [], "bob's search finds a later event"
        await bob.client.sync(timeout=0, since=bob.client.next_batch)
        assert bob.event(room_id, after_id) is None, "bob's sync delivered a later event"
        step("leave seen, nothing later visible")

        print("nio session complete")
    finally:
        await alice.client.close()
        await bob.client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
