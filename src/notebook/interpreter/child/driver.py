# wsloop's Python interpreter driver: runs paragraphs sent by the server in
# one persistent namespace. Commands arrive on stdin, one JSON object per
# line: {"run": <id>, "code": "<source>"}. Everything the paragraph prints
# goes to stdout/stderr (both the server's output pipe); when a run ends the
# driver writes {"done": <id>, "status": "SUCCESS"|"ERROR"|"ABORT"} as one
# line to fd 3, the control pipe. SIGINT interrupts the running paragraph.
import ast
import json
import os
import signal
import sys
import threading
import traceback

# SIGINT interrupts a paragraph even if whoever started the server had it
# ignored (the server resets it too; this keeps the driver right on its own).
signal.signal(signal.SIGINT, signal.default_int_handler)

control = os.fdopen(3, "w", buffering=1, encoding="utf-8")
commands = os.fdopen(os.dup(0), "r", encoding="utf-8")
devnull = os.open(os.devnull, os.O_RDONLY)
os.dup2(devnull, 0)
os.close(devnull)
sys.stdin = open(os.devnull, "r")
sys.stdout.reconfigure(line_buffering=True)
sys.stderr = sys.stdout


class ZeppelinContext:
    """The `z` object: display helpers in Zeppelin's output format."""

    max_rows = int(os.environ.get("WSLOOP_MAX_ROWS", "1000"))

    def show(self, value, max_rows=None):
        limit = self.max_rows if max_rows is None else max_rows
        columns = getattr(value, "columns", None)
        if columns is not None and hasattr(value, "itertuples"):
            rows = list(value.head(limit + 1).itertuples(index=False, name=None))
            header = [str(c) for c in columns]
        elif columns is not None and hasattr(value, "take"):
            rows = [tuple(r) for r in value.take(limit + 1)]
            header = [str(c) for c in columns]
        else:
            print(value)
            return
        cell = lambda v: "null" if v is None else str(v).replace("\t", " ").replace("\n", " ")
        lines = ["\t".join(header)]
        lines += ["\t".join(cell(v) for v in row) for row in rows[:limit]]
        sys.stdout.write("\n%table " + "\n".join(lines) + "\n")
        if len(rows) > limit:
            sys.stdout.write("\n%text Results are limited by " + str(limit) + " rows.\n")

    def html(self, markup):
        sys.stdout.write("\n%html " + str(markup) + "\n")


_control_lock = threading.Lock()


def tell(message):
    """One line on the control pipe (a lock: set-up code may report from a
    thread of its own)."""
    with _control_lock:
        control.write(json.dumps(message) + "\n")


namespace = {
    "__name__": "__main__",
    "z": ZeppelinContext(),
    # How far the running paragraph is, in percent (%pyspark's progress).
    "_wsloop_progress": lambda percent: tell({"progress": int(percent)}),
}

setup = os.environ.get("WSLOOP_PYTHON_SETUP")
if setup:
    exec(compile(setup, "<wsloop setup>", "exec"), namespace)


def run(code):
    tree = ast.parse(code, "<paragraph>", "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<paragraph>", "exec"), namespace)
    if last is not None:
        value = eval(compile(last, "<paragraph>", "eval"), namespace)
        if value is not None:
            print(repr(value))


def report(run_id, status):
    sys.stdout.flush()
    tell({"done": run_id, "status": status})


tell({"ready": True})
while True:
    try:
        line = commands.readline()
    except KeyboardInterrupt:
        # A cancel that arrived after its run had ended: nothing to stop,
        # and the namespace stays.
        continue
    if not line:
        break
    try:
        command = json.loads(line)
    except ValueError:
        continue
    run_id = command.get("run")
    try:
        run(command.get("code", ""))
        status = "SUCCESS"
    except KeyboardInterrupt:
        print("Interrupted (paragraph cancelled)")
        status = "ABORT"
    except SystemExit as exit_request:
        print("SystemExit:", exit_request.code)
        status = "ERROR"
    except BaseException:
        kind, error, trace = sys.exc_info()
        # Drop the driver's own frames: the traceback starts in the paragraph.
        while trace is not None and trace.tb_frame.f_code.co_filename != "<paragraph>":
            trace = trace.tb_next
        traceback.print_exception(kind, error, trace, file=sys.stdout)
        status = "ERROR"
    try:
        report(run_id, status)
    except KeyboardInterrupt:
        report(run_id, "ABORT")
