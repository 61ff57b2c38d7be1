"""``make run``'s terminal, as a person sees it: the real runner (honcho with the project's
Procfile: broker, Airflow standalone, emulators, listener, loader, dashboard) on free ports
and private paths. After the banner, a minute without trouble prints fewer than 40
lines, a status line among them every 10 s; a listener problem shows within 10 s; Ctrl-C
stops every process and says so, and none is left. Before the pipeline was started, the
status line and the dashboard say so.

The exchange emulator runs in the test (the Procfile's other lines as they are), so that
the test can break the listener's connection when it chooses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from marketstream.energy.background import BackgroundLoop
from marketstream.energy.exchange_emulator import ExchangeConfig, ExchangeEmulator
from tests.integration.test_dashboard_e2e import browser_page
from tests.support import ARTIFACTS, ROOT, free_port, python_env, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BANNER_END = "Ctrl-C stops everything."
QUIET_WINDOW_S = 60
# Secrets the run is given and must show nowhere (terminal or log files). The webhook's
# port is closed; the health check sends nothing before the pipeline is started anyway.
SPARK_SECRET = "spark-secret-" + os.urandom(8).hex()
WEBHOOK_PATH = "T0SECRET/B0SECRET/" + os.urandom(8).hex()


class Terminal:
    """The runner's output, line by line, with the moment each arrived."""

    def __init__(self, process: subprocess.Popen, copy: Path):
        self.lines: list[tuple[float, str]] = []
        self._copy = copy.open("w")
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            self._copy.write(line)
            self._copy.flush()

    def index_of(self, text: str) -> int | None:
        return next((i for i, (_, line) in enumerate(list(self.lines)) if text in line), None)

    def since(self, index: int) -> list[tuple[float, str]]:
        return list(self.lines)[index + 1:]

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._copy.close()


def stack_env(tmp_path: Path, exchange_port: int) -> dict[str, str]:
    return python_env(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
        AIRFLOW_UI_URL=f"http://127.0.0.1:{free_port()}", AIRFLOW_HOME=str(tmp_path / "airflow"),
        DASHBOARD_PORT=str(free_port()), SPARK_UI_URL=f"http://127.0.0.1:{free_port()}",
        EXCHANGE_WS_URL=f"ws://127.0.0.1:{exchange_port}",
        MARKET_DATA_PORT=str(market := free_port()), MARKET_DATA_URL=f"http://127.0.0.1:{market}",
        MARKET_DATA_RATE_LIMIT_PATH=str(tmp_path / "rate_limit.sqlite"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'energy.db'}",
        EXPORT_DIR=str(tmp_path / "exports"), ALERT_STATE_PATH=str(tmp_path / "alerts.sqlite"),
        SPARK_CHECKPOINT_DIR=str(tmp_path / "checkpoint"), VALIDATION_CACHE_DIR=str(tmp_path / "validation"),
        SPARK_INDEX_DIR=str(tmp_path / "spark-index"), LOG_DIR=str(tmp_path / "log"),
        SPARK_AUTHENTICATE_SECRET=SPARK_SECRET,
        ALERT_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/services/{WEBHOOK_PATH}",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )


def processes_with(env_value: str) -> list[psutil.Process]:
    """Processes whose environment holds this test's private log directory: this run's."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("LOG_DIR") == env_value:
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_quiet_terminal_that_shows_problems_and_stops_everything(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    procfile = tmp_path / "Procfile"
    procfile.write_text("".join(line for line in (ROOT / "Procfile").read_text().splitlines(keepends=True)
                                if not line.startswith("exchange:")))
    with BackgroundLoop() as loop:
        exchange = ExchangeEmulator(ExchangeConfig(port=0, deals_per_minute=20, seed=1))
        loop.run(exchange.start())
        env = stack_env(tmp_path, exchange.port)
        runner = subprocess.Popen([sys.executable, "-m", "marketstream.embedded.run", "--procfile", str(procfile)],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        terminal = Terminal(runner, ARTIFACTS / "make-run-terminal.txt")
        try:
            banner = wait_for(lambda: terminal.index_of(BANNER_END), 240, 0.5, "the banner")
            quiet_from = terminal.lines[banner][0]
            time.sleep(QUIET_WINDOW_S)
            quiet = [line for at, line in terminal.since(banner) if at <= quiet_from + QUIET_WINDOW_S]
            assert len(quiet) < 40, "\n".join(quiet)
            status = [line for line in quiet if line.startswith("status ")]
            assert len(status) >= 5, "\n".join(quiet)
            assert len({line.split(" UTC")[0] for line in status}) == len(status)  # it moves
            assert all("snapshots last minute" in line and "dead letters" in line for line in status)
            wait_for(lambda: terminal.index_of("pipeline not started: trigger it in the Airflow UI or run `make demo`"),
                     120, 1, "the pipeline's state from Airflow")
            with browser_page(width=1280, height=900) as page:  # the dashboard says it too
                page.goto(f"http://127.0.0.1:{env['DASHBOARD_PORT']}/")
                page.get_by_text("Pipeline not started: trigger it in the Airflow UI or run").wait_for(timeout=60_000)

            seen = len(terminal.lines)
            broke = time.monotonic()
            assert loop.run(exchange.drop_all()) == 1
            shown = wait_for(lambda: next(((at, line) for at, line in terminal.since(seen - 1)
                                           if " listener | " in line and "WARNING" in line), None),
                             15, 0.2, "the listener's warning on the terminal")
            assert shown[0] - broke < 10, shown
            assert "exchange connection closed" in shown[1]

            runner.send_signal(signal.SIGINT)
            assert runner.wait(timeout=120) == 130
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
            for leftover in processes_with(env["LOG_DIR"]):
                leftover.kill()
            terminal.close()
            loop.run(exchange.stop())

    output = terminal.text()
    assert "Ctrl-C: stopping every process ..." in output
    assert "Nothing is left running." in output.splitlines()[-1]
    assert processes_with(env["LOG_DIR"]) == []
    logs = tmp_path / "log"
    assert {"airflow.log", "broker.log", "listener.log", "loader.log", "dashboard.log", "info.log"} <= {
        p.name for p in logs.iterdir()}
    assert "exchange connection closed" in (logs / "listener.log").read_text()
    assert (logs / "airflow.log").stat().st_size > 10_000  # the chatter is filed, not shown
    filed = "".join(path.read_text(errors="replace") for path in logs.iterdir() if path.is_file())
    assert not [secret for secret in (SPARK_SECRET, WEBHOOK_PATH) if secret in output + filed]
