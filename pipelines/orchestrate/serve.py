"""`s2s serve`: the deployments of deploy/prefect.yaml, with their schedules, in one process.

The same file `prefect deploy --all` reads declares the deployments (entrypoint, parameters,
schedules); here each becomes a `RunnerDeployment` served by this process. Without
PREFECT_API_URL a local Prefect server is started first, because Prefect's ephemeral API runs
no scheduler service (cron runs would never be created); its database lives in STATE/prefect
and its address is written to STATE/serve.json for `s2s submit` and `s2s status`. On the way
out the runner stops before the server (a runner outliving its server logs errors forever).
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from pipelines.orchestrate.runs import OrchestrationError
from pipelines.settings import Settings, use_prefect_api
from pipelines.storage import NotFound, Storage, is_s3, join
from s2s_core.errors import ConfigError, InputError

SERVE_FILE = "serve.json"
SCHEDULE_KEYS = {"cron", "timezone", "active"}
SERVER_START_S = 120


def load_deployments(path: str) -> list[dict]:
    """The `deployments:` entries of a prefect.yaml, each with `name` and `entrypoint` checked."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError([f"{path}: {str(err).splitlines()[0]}"]) from None
    entries = data.get("deployments") or []
    problems = [f"{path}: deployment #{i + 1} needs `name` and `entrypoint`" for i, d in enumerate(entries)
                if not (isinstance(d, dict) and d.get("name") and d.get("entrypoint"))]
    problems += [f"{path}: {d['name']}: schedule keys {sorted(set(s) - SCHEDULE_KEYS)} (only cron schedules)"
                 for d in entries if isinstance(d, dict) and d.get("name")
                 for s in d.get("schedules") or [] if set(s) - SCHEDULE_KEYS or "cron" not in s]
    if problems or not entries:
        raise ConfigError(problems or [f"{path}: no `deployments:`"])
    return entries


def flow_of(entrypoint: str) -> Any:
    """The flow object at `path/to/module.py:function` (imported as a module of this project)."""
    path, _, name = entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def runner_deployment(entry: dict) -> Any:
    """The `RunnerDeployment` of one prefect.yaml entry (cron schedules, parameters, concurrency).
    Call it only once PREFECT_API_URL is set: Prefect fixes its settings on first use."""
    from prefect.schedules import Cron

    schedules = [Cron(s["cron"], timezone=s.get("timezone", "UTC")) for s in entry.get("schedules") or []
                 if s.get("active", True)]
    return flow_of(entry["entrypoint"]).to_deployment(
        name=entry["name"], description=entry.get("description"), tags=entry.get("tags"),
        parameters=entry.get("parameters") or {}, schedules=schedules or None,
        concurrency_limit=entry.get("concurrency_limit"))


class LocalServer:
    """`prefect server start` on 127.0.0.1 in a child process, with its database in `home`."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.url = f"http://127.0.0.1:{port}/api"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        with open(self.home / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + SERVER_START_S
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise OrchestrationError(f"the local Prefect server did not start; see {self.home / 'server.log'}")
            time.sleep(0.5)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def free_port(preferred: int) -> int:
    """`preferred` when nothing listens there, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return probe.getsockname()[1]
            except OSError:
                continue
    raise OrchestrationError("no free port for the local Prefect server")


def recorded_api(storage: Storage, state: str) -> str | None:
    """The API address a running `s2s serve` recorded in STATE/serve.json, if any."""
    try:
        return storage.read_json(join(state, SERVE_FILE))["api_url"]
    except (NotFound, InputError, KeyError, TypeError):  # none recorded, or a damaged record
        return None


def serve(settings: Settings, deployments_file: str, port: int, stream=sys.stderr) -> int:
    """Serve every deployment of `deployments_file` until interrupted (SIGINT/SIGTERM); returns 0."""
    entries = load_deployments(deployments_file)  # config errors before any server starts
    storage, server = Storage(settings.s3), None
    # Until Prefect's runner installs its own handler: a SIGTERM must still run `finally` below,
    # or a server being started would outlive us.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        api_url = settings.prefect_api_url
        if api_url is None:
            home = Path(os.path.expanduser("~/.s2s/prefect")) if is_s3(settings.state) else Path(settings.state) / "prefect"
            server = LocalServer(home, free_port(port))
            print(f"starting a local Prefect server at {server.url} (database in {home}) ...", file=stream, flush=True)
            server.start()
            api_url = server.url
        use_prefect_api(api_url)  # before anything asks Prefect for its settings
        deployments = [runner_deployment(entry) for entry in entries]
        _serve_deployments(storage, settings.state, deployments, api_url, server, stream)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()  # after the runner: prefect's serve() has returned
        storage.delete(join(settings.state, SERVE_FILE))
    return 0


def _serve_deployments(storage: Storage, state: str, deployments: list, api_url: str, server: LocalServer | None,
                       stream) -> None:
    from prefect import serve as prefect_serve

    from pipelines.orchestrate.runs import crash_leftover_runs, public_url

    if server is not None:  # our own server: runs left RUNNING by a killed serve have no process
        crashed = crash_leftover_runs(_existing_ids(deployments))
        if crashed:
            print(f"{crashed} runs left running by a previous serve marked crashed", file=stream, flush=True)
    record = {"api_url": public_url(api_url), "pid": os.getpid(),
              "server_pid": server.process.pid if server and server.process else None}
    storage.write_json(join(state, SERVE_FILE), record)
    names = ", ".join(f"{d.flow_name}/{d.name}" for d in deployments)
    print(f"serving {names} on {public_url(api_url)}; Ctrl-C stops", file=stream, flush=True)
    prefect_serve(*deployments, print_starting_message=False, pause_on_shutdown=False)


def _existing_ids(deployments: list) -> list:
    """Ids of those deployments already known to the server (from an earlier serve)."""
    from prefect.exceptions import ObjectNotFound

    from pipelines.orchestrate.runs import client

    ids = []
    with client() as prefect:
        for d in deployments:
            try:
                ids.append(prefect.read_deployment_by_name(f"{d.flow_name}/{d.name}").id)
            except ObjectNotFound:
                continue
    return ids


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
