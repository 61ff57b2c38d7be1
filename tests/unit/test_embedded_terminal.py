"""What ``make run`` puts on the terminal and in ``var/log`` (the printer honcho writes
to), the status line, and what the pipeline's state reads as. The whole stack under the
real runner: tests/integration/test_make_run.py."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime

from honcho.printer import Message

from marketstream.embedded.run import QuietPrinter, stop_leftovers
from marketstream.embedded.status import Status
from marketstream.pipeline_state import NOT_STARTED, STOPPED, PipelineRun, PipelineState, skip_reason

AT = datetime(2026, 12, 5, 23, 58, 7)


def feed(printer: QuietPrinter, name: str, *lines: str) -> None:
    printer.write(Message(type="line", data="\n".join(lines) + "\n", time=AT, name=name, colour=None))


def test_every_line_is_filed_and_only_warnings_errors_and_the_banner_are_shown(tmp_path):
    terminal = io.StringIO()
    printer = QuietPrinter(terminal, tmp_path)
    feed(printer, "info", "marketstream embedded stack:", "status 23:58:07 UTC | pipeline running")
    feed(printer, "airflow", "2026-12-05T23:58:07Z [info     ] Filling up the DagBag [airflow.models.dagbag]",
         "2026-12-05T23:58:08Z [warning  ] DAG file changed while parsing [airflow.dag_processing]")
    feed(printer, "listener", "2026-12-05 23:58:09,001 INFO __main__: connected",
         "2026-12-05 23:58:09,002 ERROR __main__: could not dead-letter an exchange message",
         "Traceback (most recent call last):", '  File "listener.py", line 3, in <module>',
         "ConnectionError: broker gone", "2026-12-05 23:58:10,000 INFO __main__: reconnected")
    feed(printer, "job", "26/12/05 23:58:11 WARN TaskSetManager: Lost task 0.0")
    feed(printer, "system", "listener started (pid=12)", "loader stopped (rc=1)")

    shown = terminal.getvalue().splitlines()
    assert shown == [
        "marketstream embedded stack:",
        "status 23:58:07 UTC | pipeline running",
        "23:58:07 airflow | 2026-12-05T23:58:08Z [warning  ] DAG file changed while parsing [airflow.dag_processing]",
        "23:58:07 listener | 2026-12-05 23:58:09,002 ERROR __main__: could not dead-letter an exchange message",
        "23:58:07 listener | Traceback (most recent call last):",
        '23:58:07 listener |   File "listener.py", line 3, in <module>',
        "23:58:07 listener | ConnectionError: broker gone",
        "23:58:07 job | 26/12/05 23:58:11 WARN TaskSetManager: Lost task 0.0",
        "23:58:07 system | loader stopped (rc=1)",
    ]
    filed = (tmp_path / "listener.log").read_text().splitlines()
    assert filed[0] == "2026-12-05 23:58:09,001 INFO __main__: connected" and len(filed) == 6
    assert "Filling up the DagBag" in (tmp_path / "airflow.log").read_text()


def test_a_process_that_fails_shows_its_last_lines(tmp_path):
    terminal = io.StringIO()
    printer = QuietPrinter(terminal, tmp_path)
    feed(printer, "dashboard", *(f"line {n}" for n in range(20)), "Error: Port 8501 is already in use")
    feed(printer, "exchange", "listening on 5050")
    feed(printer, "system", "dashboard stopped (rc=1)")
    assert terminal.getvalue().splitlines() == [f"23:58:07 dashboard | line {n}" for n in range(11, 20)] + [
        "23:58:07 dashboard | Error: Port 8501 is already in use", "23:58:07 system | dashboard stopped (rc=1)"]


def test_while_everything_stops_only_errors_are_shown(tmp_path):
    terminal = io.StringIO()
    printer = QuietPrinter(terminal, tmp_path, stopping=True)
    feed(printer, "system", "SIGINT received", "sending SIGTERM to listener (pid 12)", "listener stopped (rc=-15)")
    feed(printer, "listener", "2026-12-05 23:58:09,002 WARNING __main__: exchange connection closed; reconnecting",
         "2026-12-05 23:58:09,003 ERROR __main__: deals not flushed")
    assert terminal.getvalue().splitlines() == ["23:58:07 listener | 2026-12-05 23:58:09,003 ERROR __main__: deals not flushed"]
    assert "sending SIGTERM" in (tmp_path / "system.log").read_text()


def test_what_escaped_its_process_group_is_stopped_by_the_run_marker():
    marker = "test-marker-0123"
    escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                               env={"MARKETSTREAM_RUN_ID": marker, "PATH": "/usr/bin:/bin"})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                             env={"MARKETSTREAM_RUN_ID": "another-run", "PATH": "/usr/bin:/bin"})
    try:
        stopped = stop_leftovers(marker)
        assert escaped.wait(timeout=5) is not None
        assert stopped == ["-c import time; time.sleep(60)"]
        assert other.poll() is None  # another run's process is not ours to stop
    finally:
        for process in (escaped, other):
            process.kill()
            process.wait()


def test_the_status_line_says_each_figure():
    status = Status(at=AT.replace(tzinfo=UTC).timestamp(), pipeline=NOT_STARTED, snapshots_last_minute="0/60", lag="-",
                    batch="-", last_export="none yet", deals="1,204", dead_letters="0 orders, 2 deals")
    assert status.line() == (
        "status 23:58:07 UTC | pipeline not started: trigger it in the Airflow UI or run `make demo` | "
        "snapshots last minute 0/60 | lag - | batch - | last export none yet | deals 1,204 | dead letters 0 orders, 2 deals")


def test_the_health_check_judges_only_a_started_pipeline():
    assert skip_reason(pipeline_runs=0, active_runs=0) == NOT_STARTED
    assert skip_reason(pipeline_runs=3, active_runs=0) == STOPPED
    assert skip_reason(pipeline_runs=3, active_runs=1) is None


def test_a_run_from_before_this_start_is_named_as_carried_over():
    began = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    old = PipelineRun("manual__2026-12-05T23:10:00+00:00", "running", datetime(2026, 12, 5, 23, 10, tzinfo=UTC))
    state = PipelineState(runs=(old,), total=4)
    assert state.started_before(began) == old
    assert state.sentence() == "pipeline running: run manual__2026-12-05T23:10:00+00:00 since 2026-12-05 23:10:00 UTC"
    fresh = PipelineRun("manual__2026-12-06T09:01:00+00:00", "queued", datetime(2026, 12, 6, 9, 1, tzinfo=UTC))
    assert PipelineState(runs=(fresh, old), total=5).started_before(began) is None  # the newest active one counts
    assert PipelineState(runs=(), total=0).sentence() == NOT_STARTED
    ended = PipelineRun("manual__x", "success", datetime(2026, 12, 5, 23, 10, tzinfo=UTC))
    assert PipelineState(runs=(ended,), total=1).sentence() == STOPPED


def test_the_active_runs_age_counts_from_its_start():
    now = datetime(2026, 12, 6, 9, 1, 40, tzinfo=UTC)
    running = PipelineRun("manual__a", "running", datetime(2026, 12, 6, 9, 1, 0, tzinfo=UTC))
    assert PipelineState(runs=(running,), total=1).active_age(now) == 40.0
    queued = PipelineRun("manual__b", "queued", None)  # its job has not begun
    assert PipelineState(runs=(queued, running), total=2).active_age(now) == 0.0
    ended = PipelineRun("manual__c", "failed", datetime(2026, 12, 6, 8, 0, tzinfo=UTC))
    assert PipelineState(runs=(ended,), total=1).active_age(now) is None


# Warnings each start prints although nothing is wrong, as make run's processes print them.
ROUTINE = {
    "broker": ["[2026-12-06 03:18:47,063] WARN [QuorumController id=1] Performing controller activation. "
               "(org.apache.kafka.controller.QuorumController)"],
    "airflow": [
        "triggerer  | 2026-12-06T03:18:52.795010Z [warning  ] ASGI app factory detected. Using it, but please consider "
        "setting the --factory flag explicitly. [uvicorn.error] loc=config.py:521",
        "scheduler  | 2026-12-06T03:18:53.714510Z [warning  ] ASGI app factory detected. Using it, but please consider "
        "setting the --factory flag explicitly. [uvicorn.error] loc=config.py:521",
        # The Spark job's output, as the pipeline task's log wraps it.
        "2026-12-06T03:22:22.914183Z [info     ] 2026-12-06 03:22:22,913 NativeCodeLoader WARN Unable to load "
        "native-hadoop library for your platform... using builtin-java classes where applicable "
        "[airflow.task.hooks.airflow.providers.apache.spark.hooks.spark_submit.SparkSubmitHook] loc=spark_submit.py:965",
        "WARNING: Using incubator modules: jdk.incubator.vector "
        "[airflow.task.hooks.airflow.providers.apache.spark.hooks.spark_submit.SparkSubmitHook] loc=spark_submit.py:965",
        "26/12/06 03:22:21 WARN Utils: Your hostname, build-7 resolves to a loopback address: 127.0.1.1; "
        "using 10.0.0.5 instead (on interface eth0)",
        "26/12/06 03:22:21 WARN Utils: Set SPARK_LOCAL_IP if you need to bind to another address",
        "2026-12-06 03:22:25,186 ResolveWriteToStream WARN spark.sql.adaptive.enabled is not supported in streaming "
        "DataFrames/Datasets and will be disabled.",
        "2026-12-06 03:22:25,687 MicroBatchExecution WARN Disabling AQE since AQE is not supported in stateful workloads.",
        "scheduler  | 2026-12-06 06:09:28.652402+00:00 [info     ] 2026-12-06 06:09:28,627 StateStore WARN Loaded state "
        "store provider in loadTimeMs=2911 for storeId=StateStoreId[ operatorId=0, partitionId=1, storeName=default ] "
        "and queryRunId=5c160c61-cb4f-4f31-bd99-f8134b3d59e5 [airflow.task.hooks.airflow.providers.apache.spark.hooks."
        "spark_submit.SparkSubmitHook] loc=spark_submit.py:965",
    ],
}


def test_routine_warnings_are_filed_not_shown_and_real_ones_still_show(tmp_path):
    terminal = io.StringIO()
    printer = QuietPrinter(terminal, tmp_path)
    for name, lines in ROUTINE.items():
        feed(printer, name, *lines)
    assert terminal.getvalue() == ""
    for name, lines in ROUTINE.items():
        assert (tmp_path / f"{name}.log").read_text().splitlines() == lines

    real = ["[2026-12-06 03:30:00,000] WARN [QuorumController id=1] Cannot fence broker 2 (org.apache.kafka.controller)",
            "2026-12-06 03:30:01,000 TaskSetManager WARN Lost task 0.0 in stage 3.0: java.io.IOException",
            # An error is shown whatever it quotes.
            "2026-12-06 03:30:02,000 NativeCodeLoader ERROR Unable to load native-hadoop library for your platform... "
            "using builtin-java classes where applicable"]
    feed(printer, "airflow", *real)
    assert terminal.getvalue().splitlines() == [f"23:58:07 airflow | {line}" for line in real]


def test_make_run_and_make_demo_read_the_same_dotenv(tmp_path, monkeypatch):
    from marketstream.embedded.run import apply_dotenv

    monkeypatch.delenv("AIRFLOW_UI_URL", raising=False)
    (tmp_path / ".env").write_text("AIRFLOW_UI_URL=http://127.0.0.1:18081\n# a comment\n")
    monkeypatch.setattr("os.environ", dict(os.environ))  # the test's changes stay in the test
    apply_dotenv(tmp_path)
    assert os.environ["AIRFLOW_UI_URL"] == "http://127.0.0.1:18081"
    apply_dotenv(tmp_path / "nowhere")  # no .env: nothing changes, nothing fails
