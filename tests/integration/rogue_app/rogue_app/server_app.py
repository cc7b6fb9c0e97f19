"""The hostile app's ServerApp: asks every node and writes what the ClientApps could read."""

from __future__ import annotations

import json
from pathlib import Path

from flwr.app import Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    nodes = list(grid.get_node_ids())
    msgs = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    out = {}
    for reply in grid.send_and_receive(msgs, timeout=120):
        key = str(reply.metadata.src_node_id)
        out[key] = {"error": reply.error.reason} if reply.has_error() else dict(reply.content["found"])
    Path(str(context.run_config["out"])).write_text(json.dumps(out))
