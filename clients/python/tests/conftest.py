"""The harness: a real ``smith up`` (the binary in ``SMITH_BIN``) on a fresh data dir and a
free loopback port, driven through the client.

Every server writes its stdout and stderr to its temp dir; the stderr of a server whose tests
failed is printed at its teardown. Models are decoded strictly here: a field the API serves
that a model does not declare fails the test that met it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

import mistersmith
from mistersmith import _decode

_decode.strict = True

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT = 30.0
#: Variables that change how the binary under test or the client behaves.
CLEARED_ENV = ("MISTERSMITH_URL", "MISTERSMITH_API_KEY")

#: The shared server's configuration: a roomy `sleep`, a `process` agent that leaves an
#: artifact, webhooks to loopback that give up fast.
SHARED_CONFIG = """
[agents.sleep]
concurrency = 8

[agents.artifact]
executor = "process"
command = "sh"
args = ["-c", "mkdir -p \\"$SMITH_ARTIFACTS/out\\" && printf '%s' \\"$0\\" > \\"$SMITH_ARTIFACTS/out/input.txt\\""]
input = "arg"

[webhooks]
allow_private = true
retry_for = "1s"
backoff = "100ms"
max_backoff = "200ms"
"""


def smith_bin() -> str:
    """The binary under test: ``SMITH_BIN``, else a build in the repository's target dir."""
    explicit = os.environ.get("SMITH_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"SMITH_BIN={explicit} is not an executable")
        return explicit
    for profile in ("release", "debug"):
        candidate = REPO / "target" / profile / "smith"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("no smith binary: set SMITH_BIN (cargo build -p smith builds target/debug/smith)")


class Smith:
    """One ``smith up`` process (and its later runs on the same data dir and port)."""

    def __init__(self, workdir: Path, *, config: str | None = None, token: str | None = None, args: tuple[str, ...] = ()):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.token = token
        self.args = args
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = workdir / "smith.toml"
            self.config_path.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.runs = 0

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "stderr.log"

    def start(self, listen: str = "127.0.0.1:0") -> None:
        """Starts ``smith up`` and waits for its "smith listening on URL" line."""
        n = self.runs
        self.runs += 1
        stdout_path = self.workdir / f"stdout-{n}.log"
        cmd = [smith_bin(), "up", "--listen", listen, "--data-dir", str(self.data_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        if self.token is not None:
            cmd += ["--token", self.token]
        cmd += list(self.args)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMITH_")}
        env["SMITH_LOG"] = "info"
        with open(self.stderr_path, "ab") as err:
            err.write(f"===== smith up, run {n} =====\n".encode())
        with open(stdout_path, "wb") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=self.workdir
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = stdout_path.read_text(errors="replace")
            line = next((l for l in text.splitlines(keepends=True) if l.startswith("smith listening on ")), None)
            if line is not None and line.endswith("\n"):
                self.url = line.removeprefix("smith listening on ").strip()
                return
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"smith up exited with {code} before serving:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"smith up was not serving within {START_TIMEOUT} s:\n{self.stderr()}")
            time.sleep(0.02)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Sends ``sig`` and waits for the process to exit; returns its exit code."""
        assert self.proc is not None, "smith up is not running"
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"smith up did not exit within {timeout} s of {sig.name}") from None
        finally:
            self.proc = None

    def restart(self) -> None:
        """Starts again on the same data dir, config and port (the clients' URL stays good)."""
        if self.proc is not None:
            self.stop(signal.SIGKILL)
        self.start(self.url.removeprefix("http://"))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stderr(self, lines: int = 300) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def client(self, api_key: str | None = None, **options: object) -> mistersmith.Client:
        key = api_key if api_key is not None else self.token
        return mistersmith.Client(self.url, key, **options)  # type: ignore[arg-type]

    def async_client(self, api_key: str | None = None, **options: object) -> mistersmith.AsyncClient:
        key = api_key if api_key is not None else self.token
        return mistersmith.AsyncClient(self.url, key, **options)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)


def _serve(
    request: pytest.FixtureRequest, tmp: Path, **options: object
) -> Iterator[Smith]:
    smith = Smith(tmp, **options)  # type: ignore[arg-type]
    failed_before = request.session.testsfailed
    smith.start()
    try:
        yield smith
    finally:
        smith.close()
        if request.session.testsfailed > failed_before:
            print(f"\n----- smith up stderr ({smith.stderr_path}) -----\n{smith.stderr()}")


@pytest.fixture(scope="session")
def smith(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smith]:
    """One server for the tests that need nothing of their own, without a token."""
    yield from _serve(request, tmp_path_factory.mktemp("smith-shared"), config=SHARED_CONFIG)


@pytest.fixture
def start_smith(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Smith]]:
    """Starts servers of the test's own (``config``, ``token``, ``args``), stopped after it."""
    servers: list[Iterator[Smith]] = []

    def start(**options: object) -> Smith:
        gen = _serve(request, tmp_path_factory.mktemp("smith"), **options)
        servers.append(gen)
        return next(gen)

    yield start
    for gen in servers:
        for _ in gen:
            pass


@pytest.fixture
def client(smith: Smith) -> Iterator[mistersmith.Client]:
    with smith.client() as c:
        yield c


@pytest_asyncio.fixture
async def aclient(smith: Smith) -> AsyncIterator[mistersmith.AsyncClient]:
    async with smith.async_client() as c:
        yield c
