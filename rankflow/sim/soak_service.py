"""``rankflow serve`` as the soak runs it: its own process on a free loopback port, read from
outside as an operator would (``/metrics``, the process's resident memory), killed with
SIGKILL when the schedule says so and started again.

Tests start the service the same way (tests/fixtures/service.py); the soak cannot import test
code, so it holds its own copy of the start / wait / stop steps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from rankflow.errors import RankflowError

READY_SECONDS = 240.0


class ServiceError(RankflowError):
    """The scoring service did not start, or stopped answering."""


@dataclass(frozen=True)
class LogCounters:
    """The served-feature log's counters of one service process (``/metrics``)."""

    written: int
    dropped: int
    buffered: int
    flush_errors: int


def parse_log_counters(text: str) -> LogCounters:
    """The log row counters and buffer gauge from the Prometheus text of ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "rankflow_log_rows_total":
                values[sample.labels["outcome"]] = sample.value
            elif sample.name in ("rankflow_log_buffer_rows", "rankflow_log_flush_errors_total"):
                values[sample.name] = sample.value
    return LogCounters(
        written=int(values.get("written", 0)),
        dropped=int(values.get("dropped", 0)),
        buffered=int(values.get("rankflow_log_buffer_rows", 0)),
        flush_errors=int(values.get("rankflow_log_flush_errors_total", 0)),
    )


def resident_mb(pid: int) -> float:
    """The process's resident set size (``VmRSS`` of ``/proc/<pid>/status``), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ServiceError(f"/proc/{pid}/status has no VmRSS line")


class ServiceProcess:
    """One ``rankflow [options] serve`` at a time, restartable; its output appends to
    ``log_file``, where the soak looks for tracebacks."""

    def __init__(self, env: dict[str, str], options: list[str], log_file: Path) -> None:
        self.env = env
        self.url = env["RANKFLOW_SERVICE_URL"]
        self.options = options
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._out: IO[str] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServiceError("the scoring service is not running")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start the service and wait until ``/readyz`` answers 200."""
        self._out = self.log_file.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rankflow", *self.options, "serve"],
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServiceError(
                    f"the scoring service exited {self.process.returncode}; its output: "
                    f"{self.log_file}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise ServiceError(f"the scoring service was not ready in {READY_SECONDS:.0f} s")

    def counters(self) -> LogCounters:
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        response.raise_for_status()
        return parse_log_counters(response.text)

    def kill(self) -> None:
        """SIGKILL: no last flush, no clean-up; what the buffer held is gone."""
        if self.running:
            os.killpg(self.pid, signal.SIGKILL)
            assert self.process is not None
            self.process.wait()
        self._close_output()

    def stop(self) -> None:
        """SIGINT (graceful: the log's last flush runs), SIGKILL if it hangs."""
        if self.running:
            assert self.process is not None
            os.killpg(self.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait()
        self._close_output()

    def _close_output(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
