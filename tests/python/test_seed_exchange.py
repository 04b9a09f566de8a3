"""The Zeppelin seed exchange against the wsloop binary, driven by the
`websockets` package from PyPI: a client nothing in wsloop wrote.

The binary is taken from $WSLOOP_BIN (default: target/release/wsloop) and
started on a free loopback port with a fresh notebook directory.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile

import pytest
from websockets.sync.client import connect

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SEED_PARAGRAPH_ID = "20190226-165409_698627529"


@pytest.fixture
def server():
    binary = os.environ.get("WSLOOP_BIN", str(ROOT / "target" / "release" / "wsloop"))
    with tempfile.TemporaryDirectory() as notebook_dir:
        process = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--notebook-dir", notebook_dir, "--log-level", "info"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            address = None
            for line in process.stderr:
                match = re.search(r"listening on ws://([0-9.]+:[0-9]+)/ws", line)
                if match:
                    address = match.group(1)
                    break
            assert address, "wsloop did not start"
            yield address, pathlib.Path(notebook_dir)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(timeout=10) == 0
            finally:
                process.kill()


def seed(name):
    return (FIXTURES / f"seed_{name}.json").read_text()


def test_seed_exchange_with_the_websockets_client(server):
    address, notebook_dir = server
    with connect(f"ws://{address}/ws", origin=f"http://{address}", open_timeout=5) as ws:
        # websockets offers permessage-deflate by default; the notebook
        # accepts it, so everything below runs compressed both ways.
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert extensions.startswith("permessage-deflate"), extensions
        ws.send(seed("list_configurations"))
        reply = json.loads(ws.recv(timeout=5))
        assert reply["op"] == "CONFIGURATIONS_INFO"
        assert reply["data"]["configurations"]["zeppelin.websocket.max.text.message.size"] == "10240000"
        assert (reply["ticket"], reply["principal"], reply["roles"]) == ("anonymous", "anonymous", "")

        ws.send(seed("ping"))
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)

        ws.send(seed("run_paragraph"))
        # The scratch note is created for it: every connection hears of it.
        reply = json.loads(ws.recv(timeout=10))
        assert reply["op"] == "NOTES_INFO", reply
        assert [note["path"] for note in reply["data"]["notes"]] == ["/scratch"]
        statuses = []
        while True:
            reply = json.loads(ws.recv(timeout=10))
            assert reply["op"] == "PARAGRAPH", reply
            paragraph = reply["data"]["paragraph"]
            assert paragraph["id"] == SEED_PARAGRAPH_ID
            statuses.append(paragraph["status"])
            if paragraph["status"] not in ("PENDING", "RUNNING"):
                break
        assert statuses == ["PENDING", "RUNNING", "FINISHED"]
        assert paragraph["results"]["code"] == "SUCCESS"
        assert paragraph["results"]["msg"][0]["type"] == "HTML"
        assert "sc.version" in paragraph["results"]["msg"][0]["data"]
        assert paragraph["config"]["editorSetting"]["language"] == "scala"

    # The paragraph was stored in the scratch note, on disk.
    stored = list(notebook_dir.glob("scratch_*.zpln"))
    assert len(stored) == 1
    note = json.loads(stored[0].read_text())
    assert note["paragraphs"][0]["id"] == SEED_PARAGRAPH_ID
    assert note["paragraphs"][0]["status"] == "FINISHED"
