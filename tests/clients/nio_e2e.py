"""Encrypted messaging, driven by matrix-nio (with its e2e extra) against a
running server: Alice and Bob each log in on two devices, Alice creates an
encrypted room and invites Bob, and each of two senders' messages must be
decrypted by every other device. Exercises /keys/upload, /keys/query,
/keys/claim, /sendToDevice and the key fields of /sync.

Usage: nio_e2e.py HOMESERVER_URL SHARED_SECRET
"""

import asyncio
import secrets
import sys
import tempfile

from nio import AsyncClient, AsyncClientConfig, JoinResponse, LoginResponse, MegolmEvent, RoomCreateResponse
from nio import RoomMessageText, RoomSendResponse, SyncResponse

from nio_flow import register

ENCRYPTION = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}


async def login(base_url: str, user: str, password: str, device: str, store: str) -> AsyncClient:
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(base_url, user, device_id=device, store_path=store, config=config)
    response = await client.login(password, device_name=device)
    assert isinstance(response, LoginResponse), response
    assert client.olm is not None, "nio has no encryption support"
    return client


async def sync(client: AsyncClient, timeout: int = 0) -> SyncResponse:
    """One /sync, then what nio's sync loop would do about keys."""
    response = await client.sync(timeout=timeout, since=client.next_batch, full_state=client.next_batch is None)
    assert isinstance(response, SyncResponse), response
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    return response


async def send(client: AsyncClient, room_id: str, body: str) -> None:
    sent = await client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
    )
    assert isinstance(sent, RoomSendResponse), sent


async def wait_for_text(client: AsyncClient, room_id: str, body: str) -> None:
    """Sync until `body` arrives decrypted; an undecryptable event fails at once."""
    for _ in range(30):
        response = await sync(client, timeout=2000)
        room = response.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            assert not isinstance(event, MegolmEvent), f"{client.device_id} could not decrypt {event.event_id}"
            if isinstance(event, RoomMessageText) and event.body == body:
                assert event.decrypted, f"{client.device_id} got {body!r} unencrypted"
                return
    raise AssertionError(f"{client.device_id} never received {body!r}")


async def main(base_url: str, secret: str) -> None:
    suffix = secrets.token_hex(4)
    alice_name, bob_name, password = f"alice{suffix}", f"bob{suffix}", secrets.token_urlsafe(16)
    register(base_url, secret, alice_name, password)
    register(base_url, secret, bob_name, password)
    with tempfile.TemporaryDirectory() as stores:
        alice1 = await login(base_url, alice_name, password, "ALICE1", stores)
        alice2 = await login(base_url, alice_name, password, "ALICE2", stores)
        bob1 = await login(base_url, bob_name, password, "BOB1", stores)
        bob2 = await login(base_url, bob_name, password, "BOB2", stores)
        everyone = [alice1, alice2, bob1, bob2]
        try:
            for client in everyone:
                await sync(client)

            created = await alice1.room_create(name="secrets", invite=[bob1.user_id], initial_state=[ENCRYPTION])
            assert isinstance(created, RoomCreateResponse), created
            room_id = created.room_id
            for _ in range(10):
                await sync(bob1, timeout=1000)
                if room_id in bob1.invited_rooms:
                    break
            joined = await bob1.join(room_id)
            assert isinstance(joined, JoinResponse), joined
            for _ in range(3):
                for client in everyone:
                    await sync(client, timeout=200)
            for client in everyone:
                assert client.rooms[room_id].encrypted, f"{client.device_id} does not see the room encrypted"

            await send(alice1, room_id, "from alice's first device")
            for client in [alice2, bob1, bob2]:
                await wait_for_text(client, room_id, "from alice's first device")
            await send(bob2, room_id, "from bob's second device")
            for client in [alice1, alice2, bob1]:
                await wait_for_text(client, room_id, "from bob's second device")
            print("every device decrypted both messages")
        finally:
            for client in everyone:
                await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
