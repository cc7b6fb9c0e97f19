"""ServerApp: runs one study launch through the hub's coordinator over the Flower Grid."""

from __future__ import annotations

import time
from pathlib import Path

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from hub.coordinator import Reply
from hub.home import HubHome
from hub.launch_runner import run_launch
from protocols.contract import Op, WireRecords
from protocols.text import strip_controls
from surgfed_app.records import from_recorddict, to_recorddict

app = ServerApp()
# Flower's Grid.send_and_receive waits 3 s between pulls, most of a round trip on a quiet federation; a pull is
# one small request to the SuperLink, so the replies are asked for more often.
PULL_SECONDS = 0.5


class GridTransport:
    """The coordinator's transport over Flower: `query.<op>` messages, replies keyed by source node."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def node_ids(self) -> list[int]:
        return list(self.grid.get_node_ids())

    def request(self, requests: dict[int, tuple[Op, WireRecords]], timeout: float) -> dict[int, Reply]:
        msgs = [
            Message(
                content=to_recorddict(records) if records else RecordDict(),
                dst_node_id=node,
                message_type=f"query.{op.value}",
            )
            for node, (op, records) in requests.items()
        ]
        waiting = set(self.grid.push_messages(msgs))
        end = time.monotonic() + timeout
        replies: dict[int, Reply] = {}
        while True:
            for reply in self.grid.pull_messages(waiting):
                waiting.discard(reply.metadata.reply_to_message_id)
                node = reply.metadata.src_node_id
                if reply.has_error():
                    replies[node] = Reply(error=strip_controls(str(reply.error.reason))[:1000])
                else:
                    replies[node] = Reply(records=from_recorddict(reply.content, from_site=True))
            if not waiting or time.monotonic() >= end:
                return replies
            time.sleep(PULL_SECONDS)


@app.main()
def main(grid: Grid, context: Context) -> None:
    home = HubHome(Path(str(context.run_config["hub-home"])))
    run_launch(GridTransport(grid), home.store(), str(context.run_config["launch-id"]), adapters_dir=home.adapters_dir)
