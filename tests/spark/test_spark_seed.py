"""The seed's Spark paragraph (`sc.version`, no directive, in a note whose
default interpreter is `spark`) against the wsloop binary with a real Spark:
the `pyspark` package from PyPI, which ships a Spark home. Also `%spark.sql`
and `%pyspark`. Driven by the `websockets` client; run by .ci/run after it
installs pyspark (each Spark start takes ~30 s, so this is not in the
default Python tests).

$WSLOOP_BIN is the binary (default target/release/wsloop); the Python that
has pyspark is the one running this test.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile

import pytest
from websockets.sync.client import connect

pyspark = pytest.importorskip("pyspark")

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SEED_PARAGRAPH_ID = "20190226-165409_698627529"
SPARK_START = 300  # seconds a paragraph may take, Spark's start included


@pytest.fixture(scope="module")
def server():
    binary = os.environ.get("WSLOOP_BIN", str(ROOT / "target" / "release" / "wsloop"))
    with tempfile.TemporaryDirectory() as notebook_dir:
        config = pathlib.Path(notebook_dir) / "wsloop.toml"
        config.write_text(
            "[notebook]\n"
            'default_interpreter = "spark"\n'
            "[interpreters.python]\n"
            f"command = {json.dumps(sys.executable)}\n"
            "[interpreters.spark]\n"
            'master = "local[2]"\n'
            'conf = { "spark.ui.enabled" = "false" }\n'
        )
        process = subprocess.Popen(
            [binary, "--config", str(config), "--listen", "127.0.0.1:0",
             "--notebook-dir", notebook_dir, "--log-level", "info"],
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
            yield address
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                assert process.wait(timeout=30) == 0
            finally:
                process.kill()


def run_to_end(ws, paragraph_id):
    """Reads until the paragraph's final PARAGRAPH; returns it and the
    statuses and streamed output seen on the way."""
    statuses, streamed = [], []
    while True:
        reply = json.loads(ws.recv(timeout=SPARK_START))
        if reply["op"] in ("PARAGRAPH_UPDATE_OUTPUT", "PARAGRAPH_APPEND_OUTPUT"):
            streamed.append(reply["data"]["data"])
            continue
        if reply["op"] != "PARAGRAPH":
            continue
        paragraph = reply["data"]["paragraph"]
        if paragraph["id"] != paragraph_id:
            continue
        statuses.append(paragraph["status"])
        if paragraph["status"] not in ("PENDING", "RUNNING"):
            return paragraph, statuses, streamed


def run_with_progress(ws, paragraph_id, text):
    """Runs `text` as paragraph `paragraph_id`; the final paragraph and the
    PROGRESS values seen for it on the way."""
    ws.send(json.dumps({
        "op": "RUN_PARAGRAPH",
        "data": {"id": paragraph_id, "paragraph": text},
        "principal": "anonymous", "ticket": "anonymous", "roles": "[]",
    }))
    progress = []
    while True:
        reply = json.loads(ws.recv(timeout=SPARK_START))
        if reply["op"] == "PROGRESS" and reply["data"]["id"] == paragraph_id:
            progress.append(reply["data"]["progress"])
        if reply["op"] == "PARAGRAPH" and reply["data"]["paragraph"]["id"] == paragraph_id:
            paragraph = reply["data"]["paragraph"]
            if paragraph["status"] not in ("PENDING", "RUNNING"):
                return paragraph, progress


def text_of(paragraph):
    return "".join(m["data"] for m in paragraph["results"]["msg"])


def test_the_seed_sc_version_answers_like_zeppelin(server):
    with connect(f"ws://{server}/ws", origin=f"http://{server}", open_timeout=5) as ws:
        ws.send((FIXTURES / "seed_run_paragraph.json").read_text())
        paragraph, statuses, streamed = run_to_end(ws, SEED_PARAGRAPH_ID)
        assert statuses == ["PENDING", "RUNNING", "FINISHED"], (statuses, paragraph.get("results"))
        assert paragraph["results"]["code"] == "SUCCESS"
        assert paragraph["results"]["msg"][0]["type"] == "TEXT"
        assert f"String = {pyspark.__version__}" in text_of(paragraph), paragraph
        assert any("Starting the spark interpreter" in s for s in streamed), streamed

        ws.send(json.dumps({
            "op": "RUN_PARAGRAPH",
            "data": {"id": SEED_PARAGRAPH_ID,
                     "paragraph": "%spark.sql select 1 as one, 'a' as letter union all select 2, null"},
            "principal": "anonymous", "ticket": "anonymous", "roles": "[]",
        }))
        paragraph, _, _ = run_to_end(ws, SEED_PARAGRAPH_ID)
        assert paragraph["status"] == "FINISHED", paragraph
        assert paragraph["results"]["msg"][0] == {"type": "TABLE", "data": "one\tletter\n1\ta\n2\tnull\n"}

        ws.send(json.dumps({
            "op": "RUN_PARAGRAPH",
            "data": {"id": SEED_PARAGRAPH_ID, "paragraph": "undefinedThing"},
            "principal": "anonymous", "ticket": "anonymous", "roles": "[]",
        }))
        paragraph, _, _ = run_to_end(ws, SEED_PARAGRAPH_ID)
        assert paragraph["status"] == "ERROR", paragraph
        assert "not found: value undefinedThing" in text_of(paragraph)


def test_a_running_spark_job_reports_its_progress(server):
    """Zeppelin's PROGRESS {id, progress}: the share of the running jobs'
    tasks that are done, while the paragraph runs."""
    with connect(f"ws://{server}/ws", origin=f"http://{server}", open_timeout=5) as ws:
        paragraph, progress = run_with_progress(
            ws, "progress-paragraph",
            "%spark sc.parallelize(1 to 6, 6).map { x => Thread.sleep(1500); x }.count()")
        assert paragraph["status"] == "FINISHED", paragraph
        assert "Long = 6" in text_of(paragraph), paragraph
        # Six tasks of 1.5 s, two at a time: a third and two thirds done
        # on the way, reported in order.
        assert any(0 < p < 100 for p in progress), progress
        assert progress == sorted(progress), progress


def test_pyspark_runs_python_with_a_spark_session(server):
    with connect(f"ws://{server}/ws", origin=f"http://{server}", open_timeout=5) as ws:
        def run(text):
            ws.send(json.dumps({
                "op": "RUN_PARAGRAPH",
                "data": {"id": "pyspark-paragraph", "paragraph": text},
                "principal": "anonymous", "ticket": "anonymous", "roles": "[]",
            }))
            return run_to_end(ws, "pyspark-paragraph")[0]

        paragraph = run("%pyspark\ndf = spark.range(5)\ndf.count()")
        assert paragraph["status"] == "FINISHED", paragraph
        assert text_of(paragraph) == "5\n"
        paragraph = run("%spark.pyspark z.show(df.selectExpr('id', 'id * 2 as twice').limit(2))")
        assert paragraph["status"] == "FINISHED", paragraph
        assert paragraph["results"]["msg"][0] == {"type": "TABLE", "data": "id\ttwice\n0\t0\n1\t2\n"}

        # Progress of its jobs, as for %spark.
        paragraph, progress = run_with_progress(
            ws, "pyspark-paragraph",
            "%pyspark\nimport time\nsc.parallelize(range(6), 6).map(lambda x: time.sleep(1.5) or x).count()")
        assert paragraph["status"] == "FINISHED", paragraph
        assert text_of(paragraph) == "6\n", paragraph
        assert any(0 < p < 100 for p in progress), progress


def test_cancel_stops_spark_jobs_and_the_interpreters_stay_usable(server):
    import time

    with connect(f"ws://{server}/ws", origin=f"http://{server}", open_timeout=5) as ws:
        def send(op, data):
            ws.send(json.dumps({"op": op, "data": data, "principal": "anonymous",
                                "ticket": "anonymous", "roles": "[]"}))

        for pid, slow, after in [
            ("cancel-scala", "%spark sc.parallelize(1 to 2, 2).map { x => Thread.sleep(120000); x }.count()",
             "%spark sc.version"),
            # Spark does not stop a task inside a Python worker: the
            # paragraph ends at once, the task's sleep runs out after.
            ("cancel-pyspark", "%pyspark\nimport time\nsc.parallelize([1, 2], 2).map(lambda x: time.sleep(15) or x).count()",
             "%pyspark spark.range(2).count()"),
        ]:
            started = time.monotonic()
            send("RUN_PARAGRAPH", {"id": pid, "paragraph": after})
            assert run_to_end(ws, pid)[0]["status"] == "FINISHED"
            print(pid, "warm-up took", time.monotonic() - started)
            send("RUN_PARAGRAPH", {"id": pid, "paragraph": slow})
            time.sleep(5)  # the job is running on the executors
            asked = time.monotonic()
            send("CANCEL_PARAGRAPH", {"id": pid})
            paragraph, _, _ = run_to_end(ws, pid)
            assert paragraph["status"] == "ABORT", paragraph
            assert time.monotonic() - asked < 5, time.monotonic() - asked
            print(pid, "cancel took", time.monotonic() - asked, text_of(paragraph)[-300:])
            started = time.monotonic()
            send("RUN_PARAGRAPH", {"id": pid, "paragraph": after})
            paragraph, _, _ = run_to_end(ws, pid)
            print(pid, "next run took", time.monotonic() - started)
            assert paragraph["status"] == "FINISHED", paragraph
