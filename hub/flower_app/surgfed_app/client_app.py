"""ClientApp: forwards the hub's query to the local site engine and returns what its release gate lets out."""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from protocols.contract import Op
from protocols.wire import call_engine
from surgfed_app.records import from_recorddict, to_recorddict

app = ClientApp()


def _forward(op: Op, msg: Message, context: Context) -> Message:
    # The engine address and token come from the SuperNode's node config: the ClientApp reads no site data.
    address = str(context.node_config["engine"])
    token = Path(str(context.node_config["engine-token-file"])).read_text().strip()
    reply = call_engine(address, {"token": token, "op": op.value, "records": from_recorddict(msg.content)})
    if not reply.get("ok"):
        raise RuntimeError(f"site engine refused {op.value}: {reply.get('error')}")
    return Message(to_recorddict(reply["records"]), reply_to=msg)


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    return _forward(Op.HELLO, msg, context)


@app.query("submit")
def submit(msg: Message, context: Context) -> Message:
    return _forward(Op.SUBMIT, msg, context)


@app.query("status")
def status(msg: Message, context: Context) -> Message:
    return _forward(Op.STATUS, msg, context)


@app.query("fetch")
def fetch(msg: Message, context: Context) -> Message:
    return _forward(Op.FETCH, msg, context)
