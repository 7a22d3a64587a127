"""`make serve`: an OpenAI-compatible HTTP server on a run's exported GGUF, llama-cpp-python's
own server (FastAPI), bound to localhost. The chat template is the one the converter embedded
in the GGUF (the run's), so `/v1/chat/completions` formats chats as training did.

`Server` is the same process started in the background, for tests and scripts: it waits
until the server answers, and stops it with SIGTERM (SIGKILL after a grace period).

One fix is applied to the server (`python -m tunebook.serve` runs llama-cpp-python's own main
after it): its error handler turns every exception into a 500, a malformed request included,
so an OpenAI client sees "internal server error" for its own mistake. Request validation
errors become 400 `invalid_request_error` naming the fields, as OpenAI's API answers.
And a request that names no model is answered with the served name, not the GGUF's path on
this machine (llama-cpp-python echoes `model_path` then: a local path in every response).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tunebook.errors import Problem, TunebookError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(gguf: Path, name: str, port: int, host: str = "127.0.0.1", n_ctx: int = 2048) -> list[str]:
    from tunebook.gguf_runtime import threads

    return [sys.executable, "-m", "tunebook.serve", "--model", str(gguf), "--model_alias", name,
            "--host", host, "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads()),
            "--n_threads_batch", str(threads()), "--verbose", "False"]


class Server:
    def __init__(self, gguf: Path, name: str, port: int | None = None, log: Path | None = None):
        self.gguf, self.name, self.port = Path(gguf), name, port or free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> "Server":
        import urllib.request

        out = open(self.log, "a", encoding="utf-8") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(command(self.gguf, self.name, self.port), stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise TunebookError([Problem(str(self.gguf), "", f"the server exited with {self.proc.returncode} "
                                             "before it answered")], exit_code=1,
                                    hint=f"its output is in {self.log}" if self.log else "")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TunebookError([Problem(str(self.gguf), "", f"the server did not answer within {timeout:.0f} s")], exit_code=1)

    def stop(self, grace: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(gguf: Path, name: str, port: int, system: str | None) -> None:
    """Foreground: print how to reach it, then become the server (Ctrl-C stops it)."""
    url = f"http://127.0.0.1:{port}/v1"
    sys_msg = f'{{"role": "system", "content": {system!r}}}, '.replace("'", '"') if system else ""
    print(f"OpenAI-compatible server on {gguf}\n  URL    {url}   (model name: {name})\n"
          f"  try    curl -s {url}/chat/completions -H 'Content-Type: application/json' "
          f"-d '{{\"model\": \"{name}\", \"messages\": [{sys_msg}{{\"role\": \"user\", \"content\": "
          f"\"Who led the league in assists?\"}}]}}'\n"
          f"  chat   make chat SERVER={url}\n  Ctrl-C stops it.", flush=True)
    cmd = command(gguf, name, port)
    os.execv(cmd[0], cmd)


def _validation_errors_are_400() -> None:
    from fastapi.exceptions import RequestValidationError
    from llama_cpp.server import errors

    original = errors.RouteErrorHandler.error_message_wrapper

    def wrapper(self, error, body=None):
        if isinstance(error, RequestValidationError):
            details = error.errors()
            fields = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg')}" for d in details[:5])
            param = ".".join(str(p) for p in details[0].get("loc", ())[1:]) if details else None
            return 400, errors.ErrorResponse(message=f"invalid request: {fields}", type="invalid_request_error",
                                             param=param, code=None)
        return original(self, error, body)

    errors.RouteErrorHandler.error_message_wrapper = wrapper


def _unnamed_requests_answer_with_the_served_name() -> None:
    from llama_cpp.server import app

    original = app.prepare_request_resources

    def prepare(body, llama_proxy, body_model, kwargs):
        llama = original(body, llama_proxy, body_model, kwargs)
        if kwargs.get("model") is None and llama_proxy is not None:
            kwargs["model"] = body_model or next(iter(llama_proxy))
        return llama

    app.prepare_request_resources = prepare


if __name__ == "__main__":
    _validation_errors_are_400()
    _unnamed_requests_answer_with_the_served_name()
    from llama_cpp.server.__main__ import main

    main()
