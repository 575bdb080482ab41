"""A researcher's SQL flag, run where it can cost neither the server's memory nor its time.

The condition runs in a child process over Arrow copies of the batch (`items`, `tokens`), in
an in-memory DuckDB with file access off, one thread, a memory limit, no spilling to disk and
its configuration locked; the child's whole address space is capped as well (strings that
DuckDB's memory limit does not track, e.g. `repeat('x', 2000000000)`, then fail there). The
parent waits `seconds` at most and kills the child after that. Whichever limit comes first
ends the query with a message that says which; the server's own memory never holds more
than the copies and the matching item numbers. The child runs at the lowest CPU priority,
so one researcher's heavy flag does not slow the others' pages. Its working, home, secret and
extension folders are its own temporary folder, and a message names no path.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from perplex.core.errors import InputFormatError

DUCKDB_MEMORY = "256MB"  # DuckDB's own limit inside the child
CHILD_MEMORY = 1_536 * 2**20  # bytes of address space for the child (DuckDB, Arrow, Python)
TOO_MUCH_MEMORY = (f"The flag's SQL needed more memory than a flag may use (DuckDB's limit "
                   f"{DUCKDB_MEMORY}, the whole query about {CHILD_MEMORY // 2**20:,} MiB) and "
                   "was stopped: make it simpler.")


def run_condition(items: pa.Table, tokens: pa.Table, condition: str, seconds: float
                  ) -> list[int]:
    """The `idx` of the items for which `condition` holds (InputFormatError when refused)."""
    with tempfile.TemporaryDirectory(prefix="perplex-flag-") as folder:
        work = Path(folder)
        for name, table in (("items", items), ("tokens", tokens)):
            with ipc.new_file(work / f"{name}.arrow", table.schema) as writer:
                writer.write_table(table)
        (work / "condition.sql").write_text(condition, encoding="utf-8")
        extra = items.nbytes + tokens.nbytes  # the copies it reads are its own to hold
        done = _run_child(work, CHILD_MEMORY + 2 * extra, seconds)
        answer = work / "answer.json"
        if not answer.is_file():  # the child died: its memory cap is what kills a query
            raise InputFormatError(TOO_MUCH_MEMORY if _out_of_memory(done) else
                                   "The flag's SQL could not be run (its process ended "
                                   f"with code {done.returncode}): make it simpler.")
        found = json.loads(answer.read_text(encoding="utf-8"))
    if "error" in found:
        raise InputFormatError(found["error"])
    if not found["all_numbers"]:
        raise InputFormatError("The flag's SQL must select items of this batch.")
    return found["idx"]


_PATH = re.compile(r"(?<![\w.])/(?:[\w.-]+/)*[\w.-]+")  # an absolute path, named nowhere
_START_SECONDS = 5.0  # the child's own start (Python, DuckDB and Arrow imports)
CHILD_NICENESS = 19  # the lowest CPU priority: a heavy flag takes only what others leave


def _run_child(work: Path, address_space: int, seconds: float) -> subprocess.CompletedProcess:
    """Run the child at the lowest priority; kill it once `seconds` and its start are over."""
    child = subprocess.Popen(
        [sys.executable, "-m", "perplex.workspace.flag_sandbox", str(work), str(address_space),
         str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": _source_root()}, cwd=work)
    try:
        os.setpriority(os.PRIO_PROCESS, child.pid, CHILD_NICENESS)
    except OSError:  # it has ended already
        pass
    try:
        out, err = child.communicate(timeout=seconds + _START_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        raise InputFormatError(f"The flag's SQL ran longer than {seconds:g} s and was "
                               "stopped: make it simpler.") from None
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _out_of_memory(done: subprocess.CompletedProcess) -> bool:
    said = done.stderr or ""
    return done.returncode < 0 or any(m in said for m in ("MemoryError", "bad_alloc",
                                                           "Out of Memory", "memory"))


def _source_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _child(work: Path, address_space: int, seconds: float) -> None:
    """Run the condition in this (child) process and write answer.json."""
    import resource
    import threading

    import duckdb

    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    condition = (work / "condition.sql").read_text(encoding="utf-8")
    answer = work / "answer.json"
    try:
        sandbox = duckdb.connect(":memory:", config={  # its folders: the query's own
            "enable_external_access": False, "threads": 1, "memory_limit": DUCKDB_MEMORY,
            "temp_directory": "", "home_directory": str(work),
            "secret_directory": str(work / "secrets"),
            "extension_directory": str(work / "extensions"), "lock_configuration": True})
        for name in ("items", "tokens"):
            with pa.memory_map(str(work / f"{name}.arrow")) as source:
                sandbox.register(name, ipc.open_file(source).read_all())
        threading.Timer(seconds, sandbox.interrupt).start()
        rows = sandbox.execute(f"SELECT idx FROM items WHERE ({condition})").fetchall()
        result = {"idx": sorted({row[0] for row in rows}),
                  "all_numbers": all(isinstance(row[0], int) for row in rows)}
    except duckdb.InterruptException:
        result = {"error": f"The flag's SQL ran longer than {seconds:g} s and was stopped: "
                           "make it simpler."}
    except (duckdb.OutOfMemoryException, MemoryError):
        result = {"error": TOO_MUCH_MEMORY}
    except duckdb.Error as exc:
        first = _PATH.sub("(a path)", str(exc).strip().splitlines()[0])[:300]
        result = {"error": f"The flag's SQL was refused: {first}"}
    answer.write_text(json.dumps(result), encoding="utf-8")
    os._exit(0)  # the timer thread may still wait: leave at once


if __name__ == "__main__":
    _child(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
