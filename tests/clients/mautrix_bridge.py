"""A bridge built on mautrix-python (the framework of the mautrix bridges),
against a running server that has it registered as an application service.

The bridge pings itself through the homeserver, registers a bridged user
(a "ghost") without any login, sets its profile, joins the room a human
user invited it to, and sends messages as it, one with the bridged
network's timestamp. The human user must see them from the ghost, with
that timestamp, and the bridge must receive the human's reply in a
transaction from the homeserver.

Usage: mautrix_bridge.py HOMESERVER_URL SERVER_NAME HUMAN_TOKEN AS_PORT
"""

import asyncio
import sys

from mautrix.appservice import AppService
from mautrix.appservice.state_store.memory import ASStateStore
from mautrix.client import ClientAPI
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.types import EventType, MessageType, PaginationDirection, TextMessageEventContent, UserID

AS_TOKEN = "mautrix-as-token"
HS_TOKEN = "mautrix-hs-token"
DATED_TS = 1_500_000_000_000


class MemoryASStateStore(ASStateStore, MemoryStateStore):
    """mautrix keeps what it learns of rooms here; nothing is written to disk."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


async def main(base_url: str, domain: str, human_token: str, port: int) -> None:
    bridge = AppService(
        server=base_url,
        domain=domain,
        as_token=AS_TOKEN,
        hs_token=HS_TOKEN,
        bot_localpart="_mx_bot",
        id="mautrix",
        state_store=MemoryASStateStore(),
    )
    received: asyncio.Queue = asyncio.Queue()

    @bridge.matrix_event_handler
    async def on_event(event) -> None:
        await received.put(event)

    await bridge.start("127.0.0.1", port)
    try:
        duration = await bridge.ping_self("meow")
        assert duration >= 0, duration

        ghost = bridge.intent.user(UserID(f"@_mx_carol:{domain}"))
        await ghost.ensure_registered()
        await ghost.set_displayname("Carol (bridged)")

        human = ClientAPI(mxid=UserID(f"@alice:{domain}"), base_url=base_url, token=human_token)
        room_id = await human.create_room(invitees=[ghost.mxid])
        await ghost.ensure_joined(room_id)
        await ghost.send_text(room_id, "hello from the bridge")
        dated = TextMessageEventContent(msgtype=MessageType.TEXT, body="sent on the bridged network")
        await ghost.send_message_event(room_id, EventType.ROOM_MESSAGE, dated, timestamp=DATED_TS)

        page = await human.get_messages(room_id, direction=PaginationDirection.BACKWARD, limit=50)
        messages = {e.content.body: e for e in page.events if e.type == EventType.ROOM_MESSAGE}
        assert messages["hello from the bridge"].sender == ghost.mxid, messages
        assert messages["sent on the bridged network"].timestamp == DATED_TS, messages
        profile = await human.get_profile(ghost.mxid)
        assert profile.displayname == "Carol (bridged)", profile

        reply = await human.send_text(room_id, "hello, bridged network")
        while True:
            event = await asyncio.wait_for(received.get(), timeout=30)
            if event.event_id == reply:
                break
        assert event.sender == human.mxid and event.room_id == room_id, event
        assert event.content.body == "hello, bridged network", event
        await human.api.session.close()
    finally:
        await bridge.stop()
    print("mautrix bridge complete")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
