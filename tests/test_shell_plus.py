"""`python manage.py shell_plus --lab` serves the notebooks and runs ORM code in a kernel."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, STATE

pytestmark = pytest.mark.slow

websocket = pytest.importorskip("websocket")  # websocket-client, a jupyter_server dependency


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A tiny client for the Jupyter server's REST API and kernel websocket."""

    def __init__(self, port: int, token: str):
        self.base = f"http://127.0.0.1:{port}"
        self.ws_base = f"ws://127.0.0.1:{port}"
        self.headers = {"Authorization": f"token {token}"}

    def request(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={**self.headers, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = resp.read()
        return json.loads(payload) if payload else None

    def execute(self, kernel_id: str, code: str, timeout: float = 60) -> tuple[str, dict]:
        """Run ``code`` in the kernel; return its stdout and the execute_reply content."""
        ws = websocket.create_connection(
            f"{self.ws_base}/api/kernels/{kernel_id}/channels",
            header=[f"{k}: {v}" for k, v in self.headers.items()],
            timeout=timeout,
        )
        try:
            msg_id = uuid.uuid4().hex
            header = {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "test",
                "session": uuid.uuid4().hex,
                "version": "5.3",
                "date": "",
            }
            content = {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            ws.send(
                json.dumps(
                    {
                        "header": header,
                        "parent_header": {},
                        "metadata": {},
                        "content": content,
                        "channel": "shell",
                        "buffers": [],
                    }
                )
            )
            stdout, errors = [], []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["msg_type"]
                if kind == "stream" and msg["content"]["name"] == "stdout":
                    stdout.append(msg["content"]["text"])
                elif kind == "error":
                    errors.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")
                elif kind == "execute_reply":
                    reply = msg["content"]
                    assert reply["status"] == "ok", f"cell failed: {errors or reply}"
                    return "".join(stdout), reply
            raise AssertionError(f"no execute_reply within {timeout} s")
        finally:
            ws.close()


def wait_until_up(server: Server, proc: subprocess.Popen, log: Path, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"shell_plus --lab exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return server.request("GET", "/api/status")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"Jupyter server did not answer within {timeout} s:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """End the server and its kernels: SIGTERM to the process group, SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def test_shell_plus_lab_serves_notebooks_and_runs_the_orm(generated_db, tmp_path):
    port, token = free_port(), secrets.token_urlsafe(24)
    env = generated_db.env(
        JUPYTER_PORT=str(port),
        JUPYTER_PORT_RETRIES="0",
        JUPYTER_TOKEN=token,
        # keep the test's server state (cookie secret, connection files) out of ~/.local,
        # and the user's own Jupyter and IPython set-up (a jupyter_server_config.py, kernelspecs
        # under ~/.local/share/jupyter, profile startup files) out of the test: it must pass
        # on a machine where nothing was configured, and not only there
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
        IPYTHONDIR=str(tmp_path / "ipython"),
    )
    for inherited in ("JUPYTER_PATH", "JUPYTER_CONFIG_PATH"):
        env.pop(inherited, None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # the project must set it up, not the test
    log = tmp_path / "shell_plus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "shell_plus", "--lab", "--no-browser"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, kernels included
        )
    server = Server(port, token)
    try:
        status = wait_until_up(server, proc, log)
        assert status["kernels"] == 0

        # settings.NOTEBOOK_ARGUMENTS roots the server at notebooks/
        listing = server.request("GET", "/api/contents")
        names = {item["name"] for item in listing["content"]}
        committed = {p.name for p in (PROJECT_ROOT / "notebooks").glob("*.ipynb")}
        assert {"01_buildings_per_zip.ipynb", "02_memory_over_time.ipynb"} <= committed
        assert committed <= names

        # shell_plus writes its kernelspec when it starts; the notebooks name the standard one
        specs = server.request("GET", "/api/kernelspecs")["kernelspecs"]
        assert {"python3", "django_extensions"} <= set(specs)

        kernel = server.request("POST", "/api/kernels", {"name": "django_extensions"})
        stdout, _ = server.execute(
            kernel["id"],
            "from project.buildings.models import Building, ZipCode\n"
            f"print(ZipCode.objects.filter(state={STATE!r}).count(), Building.objects.count())",
        )
        assert stdout.split() == [str(generated_db.zip_count), str(generated_db.building_count)]
        assert generated_db.zip_count > 0

        server.request("DELETE", f"/api/kernels/{kernel['id']}")
        assert server.request("GET", "/api/kernels") == []
        server.request("POST", "/api/shutdown")
        proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()
    finally:
        stop(proc)
