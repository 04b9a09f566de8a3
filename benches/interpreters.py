"""Benchmark of the child-process interpreters through the whole server:

1. round trip of a trivial `%python` paragraph (RUN_PARAGRAPH sent ->
   final PARAGRAPH received), after a warm-up;
2. streaming throughput: lines per second of a printing `%python`
   paragraph reaching a second client watching the note;
3. loop stall: a bystander's WebSocket ping round trips while (2) runs.

Usage (from the repository root, after `cargo build --release`):
    /tmp/wsloop-pyenv/bin/python benches/interpreters.py [--runs 300] [--lines 100000]
Needs the `websockets` package (tests/python/requirements.txt).
"""

import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time

from websockets.sync.client import connect

ROOT = pathlib.Path(__file__).resolve().parents[1]


def start_server(binary, notebook_dir):
    process = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--notebook-dir", notebook_dir, "--log-level", "info"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    for line in process.stderr:
        match = re.search(r"listening on ws://([0-9.]+:[0-9]+)/ws", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return process, match.group(1)
    raise RuntimeError("wsloop did not start")


def send(ws, op, data):
    ws.send(json.dumps({"op": op, "data": data, "principal": "anonymous",
                        "ticket": "anonymous", "roles": "[]"}))


def until(ws, predicate):
    while True:
        message = json.loads(ws.recv(timeout=60))
        if predicate(message):
            return message


def is_end(message):
    return message["op"] == "PARAGRAPH" and message["data"]["paragraph"]["status"] not in ("PENDING", "RUNNING")


def quantile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "wsloop"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as notebook_dir:
        process, address = start_server(args.binary, notebook_dir)
        try:
            url = f"ws://{address}/ws"
            origin = f"http://{address}"
            with connect(url, origin=origin) as ws, connect(url, origin=origin) as watcher, \
                    connect(url, origin=origin) as bystander:
                send(ws, "NEW_NOTE", {"name": "bench"})
                note = until(ws, lambda m: m["op"] == "NEW_NOTE")["data"]["note"]
                paragraph = note["paragraphs"][0]["id"]
                send(watcher, "GET_NOTE", {"id": note["id"]})
                until(watcher, lambda m: m["op"] == "NOTE")

                times = []
                for i in range(20 + args.runs):
                    started = time.perf_counter()
                    send(ws, "RUN_PARAGRAPH", {"id": paragraph, "paragraph": "%python 1"})
                    end = until(ws, is_end)
                    assert end["data"]["paragraph"]["status"] == "FINISHED", end
                    if i >= 20:
                        times.append(time.perf_counter() - started)
                # Drain the watcher's copies of those runs.
                while True:
                    try:
                        watcher.recv(timeout=0.5)
                    except TimeoutError:
                        break

                pings = []
                stop = threading.Event()

                def ping_loop():
                    while not stop.is_set():
                        sent = time.perf_counter()
                        bystander.ping().wait(10)
                        pings.append(time.perf_counter() - sent)
                        time.sleep(0.01)

                pinger = threading.Thread(target=ping_loop)
                code = f"%python\nfor i in range({args.lines}): print(i)"
                send(ws, "RUN_PARAGRAPH", {"id": paragraph, "paragraph": code})
                streamed_lines = 0
                started = None
                while True:
                    message = json.loads(watcher.recv(timeout=120))
                    if message["op"] in ("PARAGRAPH_UPDATE_OUTPUT", "PARAGRAPH_APPEND_OUTPUT"):
                        if started is None:
                            started = time.perf_counter()
                            pinger.start()
                        streamed_lines += message["data"]["data"].count("\n")
                    elif is_end(message):
                        break
                elapsed = time.perf_counter() - (started or time.perf_counter())
                stop.set()
                if pinger.is_alive():
                    pinger.join()
                final_lines = "".join(m["data"] for m in message["data"]["paragraph"]["results"]["msg"]).count("\n")

            ms = lambda s: f"{s * 1000:.2f} ms"
            print(f"%python round trip ({args.runs} runs after 20 warm-up): "
                  f"p50 {ms(statistics.median(times))}, p99 {ms(quantile(times, 0.99))}, "
                  f"mean {ms(statistics.fmean(times))}")
            print(f"streaming: {args.lines} lines printed, {streamed_lines} streamed to the watcher "
                  f"in {elapsed:.3f} s ({streamed_lines / max(elapsed, 1e-9):,.0f} lines/s), "
                  f"{final_lines} in the final result")
            if pings:
                print(f"bystander ping during the stream ({len(pings)} pings): "
                      f"p50 {ms(statistics.median(pings))}, p99 {ms(quantile(pings, 0.99))}, "
                      f"max {ms(max(pings))}")
            print(f"load: {os.getloadavg()[0]:.2f} (1-min average)")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
