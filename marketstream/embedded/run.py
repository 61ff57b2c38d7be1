"""``make run``: every process of the Procfile under honcho, with a terminal a person can
read. Each process's whole output goes to ``var/log/<process>.log`` (rotated); the
terminal shows the ``info`` process (the banner and the status line), every warning (but
the routine ones each start prints) and error of the others with the process's name (a
Python traceback whole), and processes
that stop. Ctrl-C stops every process and whatever they started that left their process
group (the Spark job's state servers run in sessions of their own), then says so.

    python -m marketstream.embedded.run [--procfile Procfile]
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import re
import secrets
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import psutil
from honcho.environ import parse, parse_procfile
from honcho.manager import Manager
from honcho.printer import Message

from marketstream.settings import PROJECT_ROOT, load_settings

ANNOUNCER = "info"  # its output is meant for the terminal
SYSTEM = "system"  # honcho's own messages
LOG_BYTES, LOG_BACKUPS = 10 * 1024 * 1024, 5
# Every process started by this run carries this variable (children inherit it), so the
# ones that escaped their process group are found at the end.
RUN_MARKER = "MARKETSTREAM_RUN_ID"
STOP_WAIT_S = 10.0

# Levels as Python's logging, log4j (Spark: WARN) and structlog (Airflow: "[warning  ]") write them.
ERRORS = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|\[(error|critical|exception)\s*\]")
WARNINGS = re.compile(r"\b(WARNING|WARN)\b|\[warning\s*\]")
# Warnings every start prints although nothing is wrong: filed, not shown. A line is
# matched anywhere (Airflow wraps the Spark job's lines in its own). Errors always show.
ROUTINE_WARNINGS = [re.compile(pattern) for pattern in (
    # Apache Kafka: a new single-node KRaft cluster writes its first metadata.
    r"WARN \[QuorumController id=\d+\] Performing controller activation\.",
    # uvicorn, for how Airflow (not this project) hands it its ASGI app.
    r"ASGI app factory detected\. Using it, but please consider setting the --factory flag explicitly\.",
    # Spark's start: Hadoop's pure-Java code paths, a loopback host name, Spark's own
    # use of the JDK's vector module.
    r"Unable to load native-hadoop library for your platform\.\.\. using builtin-java classes where applicable",
    r"Your hostname, \S+ resolves to a loopback address",
    r"Set SPARK_LOCAL_IP if you need to bind to another address",
    r"WARNING: Using incubator modules: jdk\.incubator\.vector",
    # Adaptive query execution does not apply to a stateful stream; Spark says so per query.
    r"spark\.sql\.adaptive\.enabled is not supported in streaming DataFrames/Datasets and will be disabled\.",
    r"Disabling AQE since AQE is not supported in stateful workloads\.",
    # A state partition's first load after a start (from the checkpoint) takes seconds.
    r"StateStore WARN Loaded state store provider in loadTimeMs=\d+ for storeId=",
)]
TRACEBACK_START = "Traceback (most recent call last):"
STOPPED = re.compile(r"^(\S+) stopped \(rc=(-?\d+)\)")
LAST_WORDS = 10  # lines shown of a process that failed, if it had said nothing shown


@dataclass
class QuietPrinter:
    """A honcho printer (``write(message)``) that files every line and shows few."""

    terminal: TextIO
    log_dir: Path
    stopping: bool = False
    _logs: dict[str, logging.Logger] = field(default_factory=dict)  # one per Procfile process
    _in_traceback: set[str] = field(default_factory=set)
    # Each process's last lines not shown: what a process that stops on its own said last.
    _unshown: dict[str, deque[str]] = field(default_factory=dict)

    def write(self, message: Message) -> None:
        if message.type != "line":
            return
        name = message.name or SYSTEM
        text = message.data.decode("utf-8", "replace") if isinstance(message.data, bytes) else message.data
        for line in text.splitlines():
            self._file(name).info(line)
            stopped = STOPPED.match(line) if name == SYSTEM and not self.stopping else None
            if stopped and stopped[2] != "0":
                for said in self._unshown.pop(stopped[1], ()):
                    self._show(message.time, stopped[1], said)
            if self.shows(name, line):
                self._show(message.time, name, line)
            elif name != SYSTEM:
                self._unshown.setdefault(name, deque(maxlen=LAST_WORDS)).append(line)

    def _show(self, at, name: str, line: str) -> None:
        prefix = "" if name == ANNOUNCER else f"{at:%H:%M:%S} {name} | "
        print(prefix + line, file=self.terminal, flush=True)

    def shows(self, name: str, line: str) -> bool:
        if name == ANNOUNCER:
            return True
        if name == SYSTEM:
            # Starts and Ctrl-C's signals are routine; a process that stops on its own is
            # news (honcho then stops the others).
            return not self.stopping and bool(STOPPED.match(line))
        if name in self._in_traceback:
            if not line[:1].isspace():
                self._in_traceback.discard(name)  # the exception's own line ends it
            return True
        if line.startswith(TRACEBACK_START):
            self._in_traceback.add(name)
            return True
        if ERRORS.search(line):
            return True
        # While everything stops, warnings are mostly about being stopped.
        if self.stopping or not WARNINGS.search(line):
            return False
        return not any(routine.search(line) for routine in ROUTINE_WARNINGS)

    def _file(self, name: str) -> logging.Logger:
        logger = self._logs.get(name)
        if logger is None:
            # A logger of this printer's own (not in logging's registry), for its file handler.
            logger = logging.Logger(name, logging.INFO)
            handler = logging.handlers.RotatingFileHandler(
                self.log_dir / f"{name}.log", maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))  # the processes stamp their own lines
            logger.addHandler(handler)
            self._logs[name] = logger
        return logger


def leftovers(marker: str) -> list[psutil.Process]:
    """Processes of this run still alive (other than this one)."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(RUN_MARKER) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(process: psutil.Process) -> str:
    try:
        command = process.cmdline()
    except psutil.Error:
        return f"pid {process.pid}"
    if "marketstream.spark.state.server" in command:
        return "Spark state server"
    parts = command[1:] if command and os.path.basename(command[0]).startswith("python") else command
    parts = parts[1:] if parts[:1] == ["-m"] else parts
    return " ".join(os.path.basename(part) for part in parts[:2]) or f"pid {process.pid}"


def stop_leftovers(marker: str) -> list[str]:
    """Terminate, then kill, what is left of this run once its process groups had time to
    stop; what had to be stopped, by kind."""
    _, found = psutil.wait_procs(leftovers(marker), timeout=STOP_WAIT_S / 2)
    kinds = [describe(p) for p in found]
    for process in found:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(found, timeout=STOP_WAIT_S)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=STOP_WAIT_S)
    return kinds


def summary(kinds: list[str]) -> str:
    """``["Spark state server", "Spark state server", "x"]`` -> ``"2 x Spark state server, 1 x x"``."""
    return ", ".join(f"{n} x {kind}" for kind, n in sorted(Counter(kinds).items()))


class Run(Manager):
    """honcho's manager, told when a stop begins (its printer then goes quiet)."""

    def __init__(self, printer: QuietPrinter):
        super().__init__(printer=printer)
        self.quiet_printer = printer

    def terminate(self):
        if not self._terminating:
            self.quiet_printer.stopping = True
            # honcho sets the return code before it stops the others: 130 for Ctrl-C.
            why = {130: "Ctrl-C", 143: "SIGTERM"}.get(self.returncode, "a process stopped")
            print(f"{why}: stopping every process ...", file=self.quiet_printer.terminal, flush=True)
        super().terminate()


def apply_dotenv(folder: Path = PROJECT_ROOT) -> None:
    """The folder's ``.env`` (honcho's format), if any, over this process's environment: what
    ``make run`` and ``make demo`` both read."""
    dotenv = folder / ".env"
    if dotenv.is_file():
        os.environ.update(parse(dotenv.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marketstream.embedded.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procfile", type=Path, default=PROJECT_ROOT / "Procfile")
    args = parser.parse_args(argv)
    # As ``honcho start`` does: the processes run in the Procfile's folder, with its .env,
    # if any, over the environment.
    home = args.procfile.resolve().parent
    apply_dotenv(home)
    log_dir = load_settings().log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    log_dir.chmod(0o700)  # logs may quote what the processes handle
    marker = secrets.token_hex(8)
    # Unbuffered: a line shows (and is filed) when it is written, not when a buffer fills.
    env = {"PYTHONUNBUFFERED": "1", **os.environ, RUN_MARKER: marker}
    printer = QuietPrinter(sys.stdout, log_dir)
    manager = Run(printer)
    processes = parse_procfile(args.procfile.read_text()).processes
    for name, command in processes.items():
        manager.add_process(name, command, env=env, cwd=str(home))
    print(f"Starting {len(processes)} processes ({', '.join(processes)}); "
          f"their whole output goes to {log_dir}/<process>.log ...", flush=True)
    try:
        manager.loop()
    finally:
        stopped = stop_leftovers(marker)
        left = leftovers(marker)
        extra = f", and what they had left running: {summary(stopped)}" if stopped else ""
        print(f"Stopped all {len(processes)} processes{extra}. "
              + ("Nothing is left running." if not left else f"Still running: {summary([describe(p) for p in left])}."),
              flush=True)
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
