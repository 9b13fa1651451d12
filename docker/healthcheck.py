"""Health check of the s2s-pipeline image (its HEALTHCHECK; deploy/compose.yaml uses it too).

The one image plays several roles; the role comes from the container's main command (the
argv of PID 1, including what an init such as `docker-init --` or `bash -c` runs):

  ray start ...            this Ray node's dashboard agent, GET :52365/api/healthz (the raylet,
                           plus the GCS on the head; public under Ray's token authentication)
  prefect server start     GET :4200/api/health
  s2s serve                the Prefect API it works against, GET $PREFECT_API_URL/health
  anything else            healthy: a one-off command's exit code says how it went

A Ray node started some other way (the Ray cluster launcher runs `bash` as the container's
main process and `ray start` through `docker exec`) is found by its raylet process.
Exit status 0 means healthy, 1 unhealthy (Docker's convention), with one line saying why.
Standard library only: it runs every 30 s and must not import torch or Ray.
"""

from __future__ import annotations

import os
import shlex
import sys
import urllib.request
from pathlib import Path

RAY_AGENT_PORT = 52365  # ray_constants.DEFAULT_DASHBOARD_AGENT_LISTEN_PORT
PREFECT_PORT = 4200
TIMEOUT_S = 5.0


def words(argv: list[str]) -> list[str]:
    """The shell words of a command line, with `bash -c "a; b"` strings split into theirs."""
    out: list[str] = []
    for arg in argv:
        try:
            parts = shlex.split(arg)
        except ValueError:
            parts = arg.split()
        out += [part.strip(";&|") for part in parts]
    return [word for word in out if word]


def _option(ws: list[str], name: str, default: int) -> int:
    for i, word in enumerate(ws):
        if word.startswith(name + "="):
            return int(word.split("=", 1)[1])
        if word == name and i + 1 < len(ws):
            return int(ws[i + 1])
    return default


def _follows(ws: list[str], program: str, *sub: str) -> bool:
    """Whether `program sub...` occurs in `ws` (program matched by its base name)."""
    return any(os.path.basename(w) == program and ws[i + 1:i + 1 + len(sub)] == list(sub)
               for i, w in enumerate(ws))


def _s2s_serve(ws: list[str]) -> bool:
    for i, word in enumerate(ws):
        if os.path.basename(word) != "s2s":
            continue
        j = i + 1
        while j < len(ws) and ws[j].startswith("-"):  # global options: --debug, --ray-address ADDR
            j += 1 if ws[j] == "--debug" or "=" in ws[j] else 2
        if j < len(ws) and ws[j] == "serve":
            return True
    return False


def checks_for(main_argv: list[str], raylet_running: bool, environ: dict[str, str]) -> list[str]:
    """The URLs that must answer for a container whose main command is `main_argv`."""
    ws = words(main_argv)
    urls = []
    if _follows(ws, "ray", "start") or raylet_running:
        port = _option(ws, "--dashboard-agent-listen-port", RAY_AGENT_PORT)
        urls.append(f"http://127.0.0.1:{port}/api/healthz")
    if _follows(ws, "prefect", "server", "start"):
        urls.append(f"http://127.0.0.1:{_option(ws, '--port', PREFECT_PORT)}/api/health")
    if _s2s_serve(ws) and environ.get("PREFECT_API_URL"):
        urls.append(environ["PREFECT_API_URL"].rstrip("/") + "/health")
    return urls


def probe(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """None when `url` answers 2xx, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own URLs
            response.read(4096)
        return None
    except Exception as err:  # noqa: BLE001 - any failure is "unhealthy", with its reason
        return f"{url}: {type(err).__name__}: {err}"


def _cmdline(pid: str) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _raylet_running() -> bool:
    for entry in Path("/proc").iterdir():
        argv = _cmdline(entry.name) if entry.name.isdigit() else []
        if argv and os.path.basename(argv[0]) == "raylet":
            return True
    return False


def main() -> int:
    urls = checks_for(_cmdline("1"), _raylet_running(), dict(os.environ))
    failures = [problem for problem in map(probe, urls) if problem]
    print("; ".join(failures) if failures else f"healthy ({', '.join(urls) or 'nothing to check'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
