"""The HTTP client of `maml submit` and `maml runs --server`: a thin layer over httpx.

The token comes from $MAML_SERVE_TOKEN, else the token file `maml serve` made (same user,
same machine). An error answer raises the MamlError its code names, with the server's
message, so the CLI shows it like a local error and exits with the same code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from maml.errors import DocumentError, MamlError, RefusedError, UsageError
from maml.serve.views import FINAL_STATUSES

DEFAULT_SERVER = "http://127.0.0.1:8742"
_BY_CODE: dict[str, type[MamlError]] = {"MAML-E002": UsageError, "MAML-E100": DocumentError,
                                        "MAML-E300": RefusedError}


class Client:
    def __init__(self, server: str | None = None, token: str | None = None,
                 timeout: float = 30.0) -> None:
        import httpx

        from maml.serve import auth

        if token is None:
            token = auth.load_or_create().token
        self.base = (server or DEFAULT_SERVER).rstrip("/")
        self._http = httpx.Client(base_url=self.base, timeout=timeout,
                                  headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            answer = self._http.request(method, "/api/v1" + path, **kwargs)
        except httpx.TransportError as exc:
            raise _Unreachable(f"cannot reach maml serve at {self.base}: {exc} "
                               "(is it running? see `maml serve`)") from None
        if answer.status_code >= 400:
            raise _error(answer)
        return answer.json()

    def submit(self, retries: int = 3, **request: Any) -> str:
        """Queue a run; a lost answer is retried with the same Idempotency-Key, so the
        document runs once however often the POST had to be sent."""
        import uuid

        headers = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in range(retries + 1):
            try:
                return self._call("POST", "/runs", json=request, headers=headers)["run_id"]
            except _Unreachable:
                if attempt == retries:
                    raise
                time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def run(self, run_id: str) -> dict[str, Any]:
        return self._call("GET", f"/runs/{run_id}")

    def runs(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._call("GET", "/runs", params=params)["runs"]

    def events(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The run's events as they happen, ending with run_finished."""
        with self._http.stream("GET", f"/api/v1/runs/{run_id}/events",
                               timeout=None) as stream:
            if stream.status_code >= 400:
                stream.read()
                raise _error(stream)
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[6:])

    def wait(self, run_id: str, poll: float = 0.5) -> dict[str, Any]:
        """Follow the run's events to its end (polling if the stream breaks); its result."""
        import httpx

        try:
            for event in self.events(run_id):
                if event["type"] == "run_finished":
                    break
        except httpx.TransportError:
            pass
        while (run := self.run(run_id))["status"] not in FINAL_STATUSES:
            time.sleep(poll)
        return run


class _Unreachable(UsageError):
    """The server did not answer (down, restarting, wrong URL)."""


def _error(answer: Any) -> MamlError:
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return MamlError(f"HTTP {answer.status_code} from maml serve: {answer.text[:300]}")
    code = str(error.get("code", MamlError.code))
    cls = _BY_CODE.get(code, MamlError)
    # the server's message is already `file:line: step: text [CODE]`; format() adds the code
    exc = cls(str(error.get("message", "")).removesuffix(f" [{code}]"))
    exc.code = code
    return exc


def echo_runs(server: str | None, as_json: bool = False, status: str | None = None) -> None:
    """`maml runs --server URL`: the server's runs, newest first (one JSON object with
    --json: {"server", "runs": [...]})."""
    import datetime as _dt

    import click

    client = Client(server)
    try:
        rows = client.runs(status=status)
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps({"server": client.base, "runs": rows}, indent=1))
        return
    for row in rows:
        when = _dt.datetime.fromtimestamp(row["submitted_at"]).isoformat(timespec="seconds")
        click.echo(f"{row['run_id']}  {when}  {row['status']:<11} {row['steps_done']}/"
                   f"{row['steps']} steps  {row['errors']} failures  {row['recoveries']} "
                   f"recoveries  {row['document']}")
