"""Screenshots of the MLflow UI, taken headless in a real browser (Chromium), for the documentation:
the Overview page of the latest finished parent run of each kind in a tracking store, and the
experiment's runs table on the saved headline view.

    python -m tracking.screenshots                                  the store of this folder (mlflow.db)
    python -m tracking.screenshots --store /path/mlflow.db --out docs

A kind is a parent run's role and domain (`main`, `main-raven`, `study`, `nas`, `nas-raven`,
`meta`, ...: whatever the store holds); each becomes `ui_<kind>.png` in `--out`, and the runs
table `ui_runs.png`. `ui_screenshots.md` beside them lists which run each picture shows.

The UI is started here (`mlflow ui`, bound to 127.0.0.1 on a free port) and stopped at the end.
Chromium is driven through its DevTools protocol (a small client below, standard library only),
so that the page can be prepared before the picture: the run's description expanded ("Show more"),
the assistant side panel closed. Needs Chromium (Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

USER_ERROR = 2
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1400, 1300
RUNS_SIZE = (2400, 560)
"""The runs table: wide, so that the saved view's columns (role, domain, seeds, model, metrics) show."""
PAGE_WAIT_S = 60.0
"""Longest wait for a page to show its content (the UI fetches it after loading)."""
PREPARE_JS = r"""
(() => {
  const done = [];
  for (const el of document.querySelectorAll('button, a, span')) {
    if ((el.textContent || '').trim() === 'Show more' && el.children.length === 0) { el.click(); done.push('description expanded'); }
  }
  const close = [...document.querySelectorAll('button[aria-label="Close"]')]
    .find(b => (b.closest('div:has(> * button[aria-label="New Chat"])') || b.parentElement.parentElement)
      .innerText.includes('Assistant'));
  if (close) { close.click(); done.push('assistant closed'); }
  return done.join(', ');
})()
"""
READY_JS = {
    "run": "document.body.innerText.includes('Description') && document.body.innerText.includes('{name}')",
    "runs": "document.body.innerText.includes('{name}')",
}


# ------------------------------------------------------------------------------------------------
# which runs
# ------------------------------------------------------------------------------------------------
def parent_kinds(client) -> dict[str, object]:
    """kind -> the latest finished parent run of that kind (see the module docstring)."""
    from tracking.describe import domain_word

    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    out: dict[str, object] = {}
    for run in runs:
        tags = run.data.tags
        role = tags.get("speccomp.role")
        if not role or "mlflow.parentRunId" in tags:
            continue
        domain = tags.get("domain", "spectra")
        kind = role if domain == "spectra" else f"{role}-{domain_word(domain)}"
        out.setdefault(kind, run)
    return out


# ------------------------------------------------------------------------------------------------
# the UI and the browser
# ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
            return
        time.sleep(0.5)
    raise RuntimeError(f"nothing answered {url} within {timeout_s:.0f} s")


@contextlib.contextmanager
def started(argv: list[str], ready_url: str, log: Path, timeout_s: float = 90.0) -> Iterator[subprocess.Popen]:
    """Run `argv` until the block ends (terminated, then killed after 10 s), once `ready_url` answers."""
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(ready_url, timeout_s, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class DevTools:
    """A minimal Chrome DevTools protocol client over one websocket (RFC 6455 text frames)."""

    def __init__(self, ws_url: str):
        rest = ws_url.removeprefix("ws://")
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=PAGE_WAIT_S)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools refused the websocket: {head[:80]!r}")
        self._buffer = head.split(b"\r\n\r\n", 1)[1]
        self._next_id = 0

    def _read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("DevTools closed the connection")
            self._buffer += chunk
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def _send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                  bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                  bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _receive(self) -> dict:
        message = b""
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            data = self._read(n)
            opcode = first & 0x0F
            if opcode in (0x1, 0x0, 0x2):
                message += data
                if first & 0x80:
                    return json.loads(message)
            elif opcode == 0x8:
                raise RuntimeError("DevTools closed the websocket")

    def call(self, method: str, **params) -> dict:
        self._next_id += 1
        self._send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def shoot(tools: DevTools, url: str, ready_js: str, path: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> str:
    """Open `url` in a `size` window, wait until `ready_js` holds (or `PAGE_WAIT_S`), prepare the
    page, save a PNG. Returns what was prepared."""
    tools.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False)
    tools.call("Page.navigate", url=url)
    deadline = time.monotonic() + PAGE_WAIT_S
    while time.monotonic() < deadline and not tools.evaluate(ready_js):
        time.sleep(0.5)
    time.sleep(1.5)  # charts and tables settle
    prepared = set()
    for _ in range(3):  # the assistant panel may open after the page's content
        prepared |= set(filter(None, (tools.evaluate(PREPARE_JS) or "").split(", ")))
        time.sleep(1.0)
    shot = tools.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))
    return ", ".join(sorted(prepared))


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def store_uri(store: str) -> str:
    """A database file path as a SQLite URI; a URI as given."""
    if "://" in store:
        return store
    return f"sqlite:///{Path(store).resolve()}"


def take(store: str, out: Path, kinds: list[str] | None = None) -> list[tuple[str, str, str]]:
    """Take the screenshots; returns (file, run name, run id) of each."""
    from mlflow import MlflowClient

    from tracking.describe import experiment_url, run_url

    uri = store_uri(store)
    client = MlflowClient(uri)
    parents = parent_kinds(client)
    if kinds:
        parents = {k: v for k, v in parents.items() if k in kinds}
    if not parents:
        raise RuntimeError(f"no finished parent run in {uri}")
    chromium = browser()
    if chromium is None:
        raise RuntimeError("no Chromium found (Debian: apt-get update && apt-get install -y chromium)")
    out.mkdir(parents=True, exist_ok=True)
    port, debug_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    taken = []
    with tempfile.TemporaryDirectory(prefix="speccomp-shots-") as tmp:
        ui = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
              "--backend-store-uri", uri]
        chrome = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                  "--no-first-run", f"--user-data-dir={tmp}/profile", f"--window-size={WIDTH},{HEIGHT}",
                  "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={debug_port}", "about:blank"]
        with started(ui, f"{base}/health", Path(tmp) / "mlflow-ui.log"), \
                started(chrome, f"http://127.0.0.1:{debug_port}/json/version", Path(tmp) / "chromium.log"):
            with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list", timeout=5) as reply:
                page = next(t for t in json.load(reply) if t.get("type") == "page")
            tools = DevTools(page["webSocketDebuggerUrl"])
            try:
                tools.call("Page.enable")
                for kind, run in sorted(parents.items()):
                    name = run.info.run_name
                    path = out / f"ui_{kind}.png"
                    shoot(tools, run_url(base, run.info.experiment_id, run.info.run_id),
                          READY_JS["run"].replace("{name}", name.replace("'", "\\'")), path)
                    taken.append((path.name, name, run.info.run_id))
                    print(f"{path}: {name} ({run.info.run_id})", file=sys.stderr)
                first = next(iter(parents.values()))
                path = out / "ui_runs.png"
                shoot(tools, experiment_url(base, first.info.experiment_id),
                      READY_JS["runs"].replace("{name}", first.info.run_name.replace("'", "\\'")), path, RUNS_SIZE)
                taken.append((path.name, "runs table, saved headline view", ""))
                print(f"{path}: the runs table on the saved headline view", file=sys.stderr)
            finally:
                tools.close()
    _write_index(out, taken)
    return taken


def _write_index(out: Path, taken: list[tuple[str, str, str]]) -> None:
    from tracking.describe import markdown_rows

    rows = [[f"[{f}]({f})", name, f"`{rid}`" if rid else ""] for f, name, rid in taken]
    (out / "ui_screenshots.md").write_text(
        "# MLflow UI screenshots\n\nTaken headless with Chromium by `python -m tracking.screenshots` "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; re-run it to re-make them.\n\n"
        + markdown_rows(["file", "shows", "run id"], rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracking.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="mlflow.db", help="tracking store: a SQLite file or a URI (default mlflow.db)")
    parser.add_argument("--out", default="docs", help="folder for the PNG files (default docs)")
    parser.add_argument("--kind", action="append", help="only these kinds (repeatable; default: every kind found)")
    args = parser.parse_args(argv)
    if "://" not in args.store and not Path(args.store).is_file():
        print(f"error: --store: no file {args.store} (give a SQLite file or a tracking URI)", file=sys.stderr)
        return USER_ERROR
    try:
        take(args.store, Path(args.out), args.kind)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
