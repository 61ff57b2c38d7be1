"""Restarting the job: without limit when crashes are independent, never in a crash loop."""

from __future__ import annotations

import pytest

from marketstream.spark.supervision import CrashLoop, RestartPolicy, Supervisor


class FakeJob:
    """Lives for the given seconds on a fake clock, then fails (None: ends normally)."""

    def __init__(self, lives):
        self.lives, self.now, self.starts = list(lives), 0.0, 0

    def clock(self):
        return self.now

    def start(self):
        self.starts += 1
        life = self.lives.pop(0)
        if life is None:
            return
        self.now += life
        raise RuntimeError(f"driver died after {life} s\nTraceback ...")


def supervise(job, policy=RestartPolicy(max_fast_failures=3, healthy_after_s=60, delay_s=0)):
    supervisor = Supervisor(policy, clock=job.clock, sleep=lambda s: None)
    supervisor.run(job.start)
    return supervisor


def test_independent_crashes_are_restarted_without_limit():
    job = FakeJob([600, 30, 3600, 10, 45, 900] * 20 + [None])  # 120 crashes, never 3 quick ones in a row
    assert supervise(job).restarts == 120 and job.starts == 121


def test_a_crash_loop_stops_with_the_reason_and_the_last_error():
    job = FakeJob([600, 5, 5, 5, None])
    with pytest.raises(CrashLoop) as caught:
        supervise(job)
    assert job.starts == 4
    message = str(caught.value)
    assert "3 times in a row" in message and "within 60 s" in message and "driver died after 5 s" in message
    assert "Traceback" not in message


def test_a_job_stopped_on_purpose_is_not_restarted():
    job = FakeJob([100, 100])
    supervisor = Supervisor(RestartPolicy(delay_s=0), clock=job.clock, sleep=lambda s: None)
    with pytest.raises(RuntimeError):
        supervisor.run(job.start, stopping=lambda: True)
    assert job.starts == 1


def test_each_restart_is_reported_and_a_failing_report_does_not_stop_the_restart():
    job = FakeJob([600, 700, None])
    reported = []

    def report(error):
        reported.append(str(error).splitlines()[0])
        raise ConnectionError("webhook down")

    Supervisor(RestartPolicy(delay_s=0), clock=job.clock, sleep=lambda s: None, on_restart=report).run(job.start)
    assert reported == ["driver died after 600 s", "driver died after 700 s"] and job.starts == 3
