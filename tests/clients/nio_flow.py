"""The foundation flow, driven by matrix-nio against a running server.

Two users are registered through Synapse's shared-secret admin API, Alice
creates a room and invites Bob, Bob accepts, Alice sends N messages and Bob
must receive all of them, in order, through /sync.

Usage: nio_flow.py HOMESERVER_URL SHARED_SECRET [N]
"""

import asyncio
import hashlib
import hmac
import json
import secrets
import sys
import urllib.request

from nio import AsyncClient, InviteMemberEvent, JoinResponse, LoginResponse, RoomCreateResponse, RoomMessageText, RoomSendResponse, SyncResponse


def register(base_url: str, secret: str, username: str, password: str) -> None:
    """Synapse-compatible shared-secret registration (nonce + HMAC-SHA1)."""
    endpoint = f"{base_url}/_synapse/admin/v1/register"
    with urllib.request.urlopen(endpoint) as response:
        nonce = json.load(response)["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(), b"notadmin"]))
    body = json.dumps({"nonce": nonce, "username": username, "password": password, "admin": False, "mac": mac.hexdigest()})
    request = urllib.request.Request(endpoint, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200, response.status


async def login(base_url: str, user: str, password: str) -> AsyncClient:
    client = AsyncClient(base_url, user)
    response = await client.login(password)
    assert isinstance(response, LoginResponse), response
    return client


async def main(base_url: str, secret: str, count: int) -> None:
    suffix = secrets.token_hex(4)
    alice_name, bob_name, password = f"alice{suffix}", f"bob{suffix}", secrets.token_urlsafe(16)
    register(base_url, secret, alice_name, password)
    register(base_url, secret, bob_name, password)
    alice = await login(base_url, alice_name, password)
    bob = await login(base_url, bob_name, password)
    try:
        first = await bob.sync(timeout=0)
        assert isinstance(first, SyncResponse), first

        created = await alice.room_create(name="foundation", invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        invited = await wait_for_invite(bob, room_id)
        assert invited, "Bob never saw the invite"
        joined = await bob.join(room_id)
        assert isinstance(joined, JoinResponse), joined

        for n in range(count):
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"message {n}"})
            assert isinstance(sent, RoomSendResponse), sent

        bodies = await collect_messages(bob, room_id, count)
        expected = [f"message {n}" for n in range(count)]
        assert bodies == expected, f"got {len(bodies)} messages: {bodies[:5]}…"
        print(f"received {count} messages in order")
    finally:
        await alice.close()
        await bob.close()


async def wait_for_invite(client: AsyncClient, room_id: str) -> bool:
    for _ in range(20):
        response = await client.sync(timeout=3000, since=client.next_batch)
        assert isinstance(response, SyncResponse), response
        room = response.rooms.invite.get(room_id)
        if room and any(isinstance(e, InviteMemberEvent) and e.membership == "invite" for e in room.invite_state):
            return True
    return False


async def collect_messages(client: AsyncClient, room_id: str, count: int) -> list:
    """Incremental /sync until `count` messages arrived; a limited timeline
    is completed backwards with /messages, as clients do."""
    bodies = []
    for _ in range(200):
        response = await client.sync(timeout=3000, since=client.next_batch)
        assert isinstance(response, SyncResponse), response
        room = response.rooms.join.get(room_id)
        if room is None:
            continue
        batch = [e.body for e in room.timeline.events if isinstance(e, RoomMessageText)]
        if room.timeline.limited:
            batch = await backfill(client, room_id, room.timeline.prev_batch, bodies) + batch
        bodies.extend(batch)
        if len(bodies) >= count:
            break
    return bodies


async def backfill(client: AsyncClient, room_id: str, token: str, known: list) -> list:
    """Messages before `token` that are not in `known` yet, oldest first."""
    missing = []
    while token:
        response = await client.room_messages(room_id, start=token, limit=50)
        page = [e.body for e in response.chunk if isinstance(e, RoomMessageText)]
        missing = list(reversed(page)) + missing
        if not response.chunk or response.end is None or response.end == token:
            break
        token = response.end
        if known and known[-1] in missing:
            break
    if known and known[-1] in missing:
        missing = missing[missing.index(known[-1]) + 1:]
    return missing


if __name__ == "__main__":
    url, shared_secret = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    asyncio.run(main(url, shared_secret, n))
