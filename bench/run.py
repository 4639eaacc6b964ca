"""One command that measures authql against a raw Starlette + Tortoise floor.

    .venv/bin/python bench/run.py [--seconds 8] [--connections 16] [--wait-idle 300]

It starts authql (``authql serve``: uvicorn, one worker) and the floor (bench/floor_app.py,
same uvicorn options) on free 127.0.0.1 ports over one scratch SQLite database, pinned to
CPU 0, while the load generators run on CPU 1. It registers two accounts, checks that every
target answers correctly, then drives, for a bounded time each:

  floor GET /me            closed loop, --connections clients (wrk), --rounds times
  GraphQL me               the same, alternating with the floor so drift hits both alike
  GraphQL login            closed loop, --login-connections clients (wrk); argon2 bound
  me @R, idle              open loop at --probe-rate requests/s (Python prober): latency
  me @R, login burst       the same while a login burst runs: does p99 stay flat?
  me, login burst          closed-loop me and the burst together: how the core is shared

and prints requests/s, p50 and p99 for each, the ratio me/floor and login/ceiling, where the
ceiling is 1 / (one argon2 verify), timed in-process on the server's core right before and
right after the login run with the server's argon2 parameters. Closed loops measure capacity
(their latency is mostly queueing: about clients / rps); the open loop measures latency at a
fixed, sub-capacity rate, which is what "p99 stays flat" means. Each row also shows how much
CPU other processes took on the two CPUs meanwhile: on a shared machine that is the noise.

wrk (C, low overhead) is the load generator; when it is missing the script installs it with
apt-get (as root) or falls back to a slower in-process asyncio generator. Only harness
failures (a server that does not start, a sanity check that fails, a load generator that
breaks) exit non-zero; missed targets are reported, not fatal. Default run: about 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
SERVER_CPU = 0
LOAD_CPU = 1
PASSWORD = "bench-password-1234"
#: argon2's minimum cost (AUTHQL_ARGON2_* names): the hash is then ~0.1 ms of a login.
CHEAP_ARGON2 = {"TIME_COST": 1, "MEMORY_KIB": 8, "PARALLELISM": 1}
ME_QUERY = "{ me { id email } }"
LOGIN_MUTATION = (
    "mutation($i: String!, $p: String!) { login(identifier: $i, password: $p) { accessToken } }"
)
REGISTER_MUTATION = (
    "mutation($e: String!, $p: String!) {"
    " register(input: {email: $e, password: $p}) { accessToken user { id email } } }"
)


class BenchError(RuntimeError):
    """The harness itself failed (not a missed target): the run exits non-zero."""


# --- results -------------------------------------------------------------------------------


@dataclass
class Sample:
    """What one load run measured. Latencies in milliseconds."""

    requests: int
    seconds: float
    errors: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    connections: int
    good: int = 0
    busy_seconds: float = 0.0
    median_rps: float | None = None  # set when this sample is the median of several runs

    @property
    def rps(self) -> float:
        """Good responses per second over the run (the load generator's clock)."""
        if self.median_rps is not None:
            return self.median_rps
        return self.good / self.seconds if self.seconds else 0.0

    @property
    def completion_rps(self) -> float:
        """Good responses / time from the start of the load to the last good response.

        For slow requests (a login takes ~4 verifies under 4 connections) requests /
        duration under-counts: the tail after the last completion holds only unfinished
        requests. A server busy from the first instant completes n requests by the time of
        the n-th completion, whether they finish one by one or in pairs, so this does not.
        """
        return self.good / self.busy_seconds if self.busy_seconds > 0 else 0.0


@dataclass
class Row:
    """One line of the report."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    other_cpu: float
    note: str = ""

    @classmethod
    def of(
        cls, name: str, sample: Sample, other_cpu: float, note: str = "", rps: float | None = None
    ) -> Row:
        return cls(
            name=name,
            rps=sample.rps if rps is None else rps,
            p50_ms=sample.p50_ms,
            p99_ms=sample.p99_ms,
            errors=sample.errors,
            requests=sample.requests,
            other_cpu=other_cpu,
            note=note,
        )


@dataclass
class Report:
    """Everything the run printed, for --json."""

    settings: dict[str, Any]
    argon2_verify_ms: float
    argon2_other_cpu: float = 0.0
    rows: list[Row] = field(default_factory=list)
    me_over_floor: float = 0.0
    login_over_ceiling: float = 0.0
    login_rest_ms: float = 0.0
    login_bound: float = 0.0
    rounds: list[dict[str, float]] = field(default_factory=list)
    me_p99_idle_ms: float = 0.0
    me_p99_burst_ms: float = 0.0


# --- machine -------------------------------------------------------------------------------


def cpu_busy(interval: float = 0.5) -> dict[int, float]:
    """Busy fraction of each CPU over ``interval``, from /proc/stat (empty if unavailable).

    Another process on the benchmark's cores skews every number; the run warns about it.
    """

    def snapshot() -> dict[int, tuple[int, int]]:
        stats: dict[int, tuple[int, int]] = {}
        with contextlib.suppress(OSError):
            for line in Path("/proc/stat").read_text().splitlines():
                match = re.match(r"cpu(\d+)\s+(.*)", line)
                if match:
                    values = [int(v) for v in match.group(2).split()]
                    idle = values[3] + (values[4] if len(values) > 4 else 0)
                    stats[int(match.group(1))] = (sum(values), idle)
        return stats

    before = snapshot()
    time.sleep(interval)
    after = snapshot()
    busy: dict[int, float] = {}
    for cpu, (total, idle) in after.items():
        if cpu in before:
            d_total = total - before[cpu][0]
            d_idle = idle - before[cpu][1]
            busy[cpu] = 1 - d_idle / d_total if d_total else 0.0
    return busy


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the block on one CPU (the calling thread), then restore the previous affinity."""
    if cpu is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, previous)


def pin_prefix(cpu: int | None) -> list[str]:
    """``taskset -c CPU`` for a child process, or nothing when pinning is off."""
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


def ensure_wrk(allow_install: bool) -> str | None:
    """The path of wrk, installing it from apt when allowed and possible; None otherwise."""
    found = shutil.which("wrk")
    if found or not allow_install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("wrk not found: apt-get install -y wrk ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"  {' '.join(command)} failed: {done.stderr.strip()[-500:]}", flush=True)
            return None
    return shutil.which("wrk")


def free_port() -> int:
    """A port the kernel just considered free on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def new_private_key_pem() -> str:
    """A fresh Ed25519 signing key (EdDSA access tokens), PKCS#8 PEM."""
    key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# --- servers -------------------------------------------------------------------------------


class Server:
    """One server subprocess in its own session, so stopping it stops all it started."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], port: int, log: Path
    ) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's pid (taskset execs, so it is the Python process itself)."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Spawn the server; output goes to its log file in the scratch folder."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=REPO_DIR,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, path: str, expect_status: int, timeout: float = 60.0) -> None:
        """Poll ``path`` until it answers ``expect_status``; fail fast if the server exits."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError(f"{self.name} exited during start-up:\n{self.log_tail()}")
            try:
                status, _ = http_request(self.port, "GET", path, timeout=2)
                if status == expect_status:
                    return
                last = f"HTTP {status}"
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {timeout:.0f}s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL it if it lingers."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """One plain HTTP request to 127.0.0.1 (set-up and sanity checks, not load)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def graphql(
    port: int, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    """POST one GraphQL document; returns ``data`` or raises BenchError with the errors."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    status, raw = http_request(port, "POST", "/graphql", body=body, headers=headers)
    try:
        document = json.loads(raw)
    except ValueError:
        raise BenchError(f"GraphQL HTTP {status}: {raw[:300]!r}") from None
    if status != 200 or document.get("errors"):
        raise BenchError(f"GraphQL HTTP {status}: {document.get('errors') or document}")
    return document["data"]  # type: ignore[no-any-return]


# --- load targets --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One request repeated under load, and the substring that marks a good response."""

    port: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expect: str

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{self.path}"

    def raw(self) -> bytes:
        """The request as HTTP/1.1 bytes, built once (the Python generator replays them)."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.body or self.method == "POST":
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal (no escaping needed inside)."""
    level = 1
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


WRK_SCRIPT = """
wrk.method = {method}
wrk.body = {body}
{headers}
local expect = {expect}
local threads = {{}}
local ffi = require("ffi")
ffi.cdef[[
  typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
bad = 0
good = 0
first = 0
last = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  first = now()
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, expect, 1, true) then
    bad = bad + 1
  else
    good = good + 1
    last = now()
  end
end

function done(summary, latency, requests)
  local nbad, ngood, span = 0, 0, 0
  for _, thread in ipairs(threads) do
    nbad = nbad + thread:get("bad")
    ngood = ngood + thread:get("good")
    span = math.max(span, thread:get("last") - thread:get("first"))
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d errors=%d bad=%d good=%d busy_s=%.6f "
    .. "mean_us=%.1f p50_us=%d p99_us=%d\\n",
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, nbad, ngood, span,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(target: Target) -> str:
    """The Lua script that makes wrk send ``target`` and report exact p50/p99 and bad bodies."""
    headers = "\n".join(
        f"wrk.headers[ {lua_string(name)} ] = {lua_string(value)}"
        for name, value in target.headers.items()
    )
    return WRK_SCRIPT.format(
        method=lua_string(target.method),
        body=lua_string(target.body.decode()),
        headers=headers,
        expect=lua_string(target.expect),
    )


class WrkRun(NamedTuple):
    """A wrk process started in the background."""

    name: str
    process: subprocess.Popen[str]
    seconds: float
    connections: int


class Wrk:
    """Runs wrk against a target; one thread (the load core is one CPU)."""

    def __init__(self, binary: str, scratch: Path, cpu: int | None) -> None:
        self.binary = binary
        self.scratch = scratch
        self.cpu = cpu

    def start(self, name: str, target: Target, seconds: float, connections: int) -> WrkRun:
        """Start a wrk run in the background; ``finish`` collects it."""
        script = self.scratch / f"{name}.lua"
        script.write_text(wrk_script(target))
        command = [
            *pin_prefix(self.cpu),
            self.binary,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "60s",
            "-s",
            str(script),
            target.url,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        return WrkRun(name, process, seconds, connections)

    @staticmethod
    def finish(handle: WrkRun) -> Sample:
        """Wait for a wrk run and parse the BENCH line its Lua ``done`` printed."""
        name, process, seconds, connections = handle
        try:
            out, err = process.communicate(timeout=seconds + 90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise BenchError(f"wrk {name}: did not finish") from None
        match = re.search(r"^BENCH (.*)$", out, re.MULTILINE)
        if process.returncode != 0 or not match:
            raise BenchError(f"wrk {name} failed ({process.returncode}): {out}{err}")
        values = {k: float(v) for k, v in (kv.split("=") for kv in match.group(1).split())}
        return Sample(
            requests=int(values["requests"]),
            seconds=values["duration_us"] / 1e6,
            errors=int(values["errors"]) + int(values["bad"]),
            mean_ms=values["mean_us"] / 1000,
            p50_ms=values["p50_us"] / 1000,
            p99_ms=values["p99_us"] / 1000,
            connections=connections,
            good=int(values["good"]),
            busy_seconds=values["busy_s"],
        )

    def run(self, name: str, target: Target, seconds: float, connections: int) -> Sample:
        """One wrk run in the foreground."""
        return self.finish(self.start(name, target, seconds, connections))


# --- the in-process generator (open-loop prober; closed-loop fallback when wrk is missing) --


class Connection:
    """A keep-alive HTTP/1.1 connection that replays prepared requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Write ``raw``, read one response (Content-Length or chunked); (status, body)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    return status, b"".join(parts)
                parts.append(chunk[:-2])
        return status, (await self.reader.readexactly(length)) if length > 0 else b""

    def close(self) -> None:
        self.writer.close()


class Recorder:
    """Latencies and errors of one in-process run."""

    def __init__(self, expect: bytes) -> None:
        self.expect = expect
        self.latencies: list[float] = []
        self.errors = 0
        self.started = time.perf_counter()
        self.last = self.started

    def record(self, started: float, status: int, body: bytes) -> None:
        if status == 200 and self.expect in body:
            self.last = time.perf_counter()
            self.latencies.append(self.last - started)
        else:
            self.errors += 1

    def sample(self, seconds: float, connections: int) -> Sample:
        ordered = sorted(self.latencies)
        if not ordered:
            return Sample(0, seconds, self.errors, 0.0, 0.0, 0.0, connections)

        def percentile(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

        return Sample(
            requests=len(ordered) + self.errors,
            seconds=seconds,
            errors=self.errors,
            mean_ms=statistics.fmean(ordered) * 1000,
            p50_ms=percentile(0.50),
            p99_ms=percentile(0.99),
            connections=connections,
            good=len(ordered),
            busy_seconds=self.last - self.started,
        )


async def open_loop(target: Target, rate: float, seconds: float, connections: int) -> Sample:
    """Send ``target`` at a fixed ``rate`` regardless of responses (no coordinated omission).

    Each request is timed from when it was due (or issued, if the generator itself ran late),
    so waiting for a free connection (the server falling behind) counts as latency instead
    of silently lowering the rate.
    """
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(target.port))
    raw = target.raw()
    recorder = Recorder(target.expect.encode())
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        connection = await pool.get()
        try:
            status, body = await connection.send(raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            recorder.errors += 1
            connection.close()
            connection = await Connection.open(target.port)
        else:
            recorder.record(scheduled, status, body)
        pool.put_nowait(connection)

    start = time.perf_counter() + 0.05
    for index in range(int(rate * seconds)):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(max(scheduled, time.perf_counter())))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    while not pool.empty():
        pool.get_nowait().close()
    return recorder.sample(elapsed, connections)


async def closed_loop(target: Target, seconds: float, connections: int) -> Sample:
    """``connections`` clients sending back to back for ``seconds`` (the wrk fallback)."""
    raw = target.raw()
    recorder = Recorder(target.expect.encode())
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        connection = await Connection.open(target.port)
        try:
            while True:
                started = time.perf_counter()
                try:
                    status, body = await connection.send(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    recorder.errors += 1
                    connection.close()
                    connection = await Connection.open(target.port)
                    continue
                if time.perf_counter() > deadline:
                    return
                recorder.record(started, status, body)
        finally:
            connection.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return recorder.sample(seconds, connections)


def run_async(coroutine: Any) -> Any:
    """Run the in-process generator on uvloop when available (less generator overhead)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


class PythonLoad:
    """The fallback closed-loop generator, with Wrk's ``run``.

    Slower than wrk: on one core it may saturate before the server does, so capacities
    measured with it are lower bounds.
    """

    def run(self, name: str, target: Target, seconds: float, connections: int) -> Sample:
        del name
        return run_async(closed_loop(target, seconds, connections))  # type: ignore[no-any-return]


# --- argon2 ceiling ------------------------------------------------------------------------


def argon2_verify_times(
    time_cost: int, memory_kib: int, parallelism: int, samples: int, cpu: int | None
) -> list[float]:
    """Wall times of ``samples`` argon2id verifies with the server's parameters, on its core.

    The server hashes on one pinned core, so its login ceiling is 1 / this: a login can be
    no faster than the verify it must do, and verifies on one core do not overlap usefully.
    """
    from argon2 import PasswordHasher, Type

    hasher = PasswordHasher(
        time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
    )
    with pinned(cpu):
        stored = hasher.hash(PASSWORD)
        hasher.verify(stored, PASSWORD)  # warm-up: first-touch page faults
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            hasher.verify(stored, PASSWORD)
            times.append(time.perf_counter() - started)
    return times


# --- profiling (optional) ------------------------------------------------------------------


def profile_me(
    load: Wrk | PythonLoad, target: Target, pid: int, seconds: float, connections: int, out: Path
) -> None:
    """Sample the authql server with py-spy while ``me`` runs; print the top frames.

    A separate run, after the measured ones: the sampler costs the server some throughput.
    """
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("\n--profile: py-spy not installed (pip install py-spy); skipped")
        return
    raw = out / "me.collapsed.txt"
    command = [
        *pin_prefix(LOAD_CPU if isinstance(load, Wrk) and load.cpu is not None else None),
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--duration",
        str(max(1, round(seconds))),
        "--format",
        "raw",
        "--output",
        str(raw),
        "--nonblocking",
    ]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    load.run("profile-me", target, seconds, connections)
    _, err = sampler.communicate(timeout=seconds + 60)
    if sampler.returncode != 0 or not raw.exists():
        print(f"\n--profile: py-spy failed: {err.decode(errors='replace')[-500:]}")
        return
    summarize_profile(raw)
    print(f"collapsed stacks (speedscope.app or flamegraph.pl read them): {raw}")


def summarize_profile(raw: Path, top: int = 20) -> None:
    """Print the hottest functions of a py-spy ``raw`` (collapsed) profile.

    Lines are merged per function (``name (file)``): under uvloop a task step starts from C,
    so stacks are rooted at whichever coroutine resumed and only per-function totals
    (anywhere on the stack) and self time add up to something readable.
    """
    self_counts: dict[str, int] = {}
    total_counts: dict[str, int] = {}
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        samples += count
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            total_counts[frame] = total_counts.get(frame, 0) + count
    if not samples:
        print("\nprofile: no samples")
        return
    print(f"\nprofile of authql under `me` load ({samples} busy samples)")
    print(f"{'self %':>7}  function")
    for frame, count in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{100 * count / samples:6.1f}%  {frame}")
    print(f"\n{'total %':>7}  function (anywhere on the stack)")
    for frame, count in sorted(total_counts.items(), key=lambda kv: -kv[1])[: top * 2]:
        print(f"{100 * count / samples:6.1f}%  {frame}")


# --- the run -------------------------------------------------------------------------------


class Contention:
    """CPU time that processes other than the benchmark's took on its CPUs in a window.

    A benchmark on a shared machine is only as good as its quiet: every row reports how
    much of a CPU something else used meanwhile, so a noisy row is visible as such.
    """

    def __init__(self, cpus: set[int] | None) -> None:
        self.cpus = cpus
        self.pids: list[int] = []
        self.tick = os.sysconf("SC_CLK_TCK")

    def _busy_ticks(self) -> int:
        total = 0
        with contextlib.suppress(OSError):
            for line in Path("/proc/stat").read_text().splitlines():
                match = re.match(r"cpu(\d+)\s+(\d+) (\d+) (\d+)", line)
                if match and (self.cpus is None or int(match.group(1)) in self.cpus):
                    total += sum(int(v) for v in match.group(2, 3, 4))  # user nice system
        return total

    def _our_seconds(self) -> float:
        times = os.times()
        ours = times.user + times.system + times.children_user + times.children_system
        for pid in self.pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ours += (int(fields[11]) + int(fields[12])) / self.tick  # utime stime
        return ours

    def begin(self) -> tuple[float, int, float]:
        return time.monotonic(), self._busy_ticks(), self._our_seconds()

    def end(self, start: tuple[float, int, float]) -> float:
        """Foreign CPU use since ``start``, as a fraction of one CPU."""
        began, busy, ours = start
        wall = time.monotonic() - began
        foreign = (self._busy_ticks() - busy) / self.tick - (self._our_seconds() - ours)
        return max(0.0, foreign / wall) if wall > 0 else 0.0


def wait_idle(cpus: set[int] | None, limit: float) -> None:
    """Wait up to ``limit`` seconds for the CPUs to stay idle for three seconds running."""
    deadline = time.monotonic() + limit
    quiet = 0
    announced = False
    while time.monotonic() < deadline:
        busy = cpu_busy(1.0)
        loaded = max((f for c, f in busy.items() if cpus is None or c in cpus), default=0.0)
        quiet = quiet + 1 if loaded < 0.10 else 0
        if quiet >= 3:
            return
        if not announced:
            print(f"waiting up to {limit:.0f} s for idle CPUs ...", flush=True)
            announced = True
    print("warning: CPUs did not go idle; running anyway")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8, help="per measurement (8)")
    parser.add_argument("--connections", type=int, default=16, help="me/floor clients (16)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="floor/me alternations; medians reported (3)"
    )
    parser.add_argument("--login-connections", type=int, default=4, help="login clients (4)")
    parser.add_argument(
        "--probe-rate", type=float, default=200, help="open-loop me requests/s for p99 (200)"
    )
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds per app (2)")
    parser.add_argument(
        "--argon2-samples", type=int, default=5, help="verifies timed before and after login (5)"
    )
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "python"), default="auto", help="load generator"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    parser.add_argument(
        "--wait-idle", type=float, default=0, metavar="S", help="first wait up to S s for idle"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy authql under me load")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as exc:
        print(f"\nbench failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> Report:
    """Start both servers, measure, print, and always stop them."""
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and SERVER_CPU in cpus and LOAD_CPU in cpus and shutil.which("taskset")
    server_cpu = SERVER_CPU if pin else None
    load_cpu = LOAD_CPU if pin else None
    if not pin and not args.no_pin:
        print("warning: cannot pin (need CPUs 0 and 1 and taskset); running unpinned")
    bench_cpus = {SERVER_CPU, LOAD_CPU} if pin else None

    wrk = None if args.loadgen == "python" else ensure_wrk(allow_install=True)
    if args.loadgen == "wrk" and wrk is None:
        raise BenchError("--loadgen wrk: wrk is not installed and could not be installed")
    if not wrk:
        print("warning: wrk unavailable; using the in-process Python generator (a lower bound)")

    if args.wait_idle > 0:
        wait_idle(bench_cpus, args.wait_idle)
    busy = cpu_busy()
    hot = {c: f for c, f in busy.items() if f > 0.15 and (bench_cpus is None or c in bench_cpus)}
    if hot:
        shares = ", ".join(f"cpu{cpu} {100 * frac:.0f}%" for cpu, frac in sorted(hot.items()))
        print(f"warning: machine not idle before the run ({shares} busy); numbers will be noisy")

    scratch = Path(tempfile.mkdtemp(prefix="authql-bench-"))
    load: Wrk | PythonLoad = Wrk(wrk, scratch, load_cpu) if wrk else PythonLoad()
    authql_port, floor_port = free_port(), free_port()
    env = {
        **os.environ,
        "AUTHQL_ENV": "development",
        "AUTHQL_DATABASE_URL": f"sqlite://{scratch / 'authql.sqlite3'}",
        "AUTHQL_DATA_DIR": str(scratch),
        "AUTHQL_PUBLIC_URL": f"http://{HOST}:{authql_port}",
        "AUTHQL_SECRET_KEY": secrets.token_urlsafe(48),
        "AUTHQL_JWT_PRIVATE_KEY": new_private_key_pem(),
        "AUTHQL_RATE_LIMITS": "off",
        "AUTHQL_LOCKOUT_THRESHOLD": "0",
        "AUTHQL_LOG_LEVEL": "warning",
        "AUTHQL_REST_DIALECTS": "none",
        "AUTHQL_ACCESS_TOKEN_TTL": "86400",
        "PYTHONUNBUFFERED": "1",
    }
    sys.path.insert(0, str(REPO_DIR))
    from authql.settings import from_env

    settings = from_env(env)
    # The floor gets the uvicorn options `authql serve` uses (authql/cli.py, _serve).
    uvicorn_options = ["--log-level", "warning", "--no-proxy-headers", "--no-server-header"]
    authql = Server(
        "authql",
        [
            *pin_prefix(server_cpu),
            *(sys.executable, "-m", "authql", "serve", "--host", HOST, "--port", str(authql_port)),
        ],
        env,
        authql_port,
        scratch / "authql.log",
    )
    floor = Server(
        "floor",
        [
            *pin_prefix(server_cpu),
            *(sys.executable, "-m", "uvicorn", "floor_app:app_from_env", "--factory"),
            *("--app-dir", str(BENCH_DIR), "--host", HOST, "--port", str(floor_port)),
            *uvicorn_options,
        ],
        env,
        floor_port,
        scratch / "floor.log",
    )
    # A second authql with minimal argon2 cost: its login rate is the cost of everything in a
    # login except the hash, which bounds login/ceiling without timing two noisy things apart.
    cheap_port = free_port()
    cheap = Server(
        "authql-cheap-argon2",
        [
            *pin_prefix(server_cpu),
            *(sys.executable, "-m", "authql", "serve", "--host", HOST, "--port", str(cheap_port)),
        ],
        {
            **env,
            "AUTHQL_PUBLIC_URL": f"http://{HOST}:{cheap_port}",
            **{f"AUTHQL_ARGON2_{name}": str(value) for name, value in CHEAP_ARGON2.items()},
        },
        cheap_port,
        scratch / "authql-cheap.log",
    )
    try:
        authql.start()
        authql.wait_ready("/health", 200)  # `serve` has migrated the database by now
        floor.start()
        cheap.start()
        floor.wait_ready("/me", 401)
        cheap.wait_ready("/health", 200)
        contention = Contention(bench_cpus)
        contention.pids = [authql.pid, floor.pid, cheap.pid]
        bench = Bench(args, settings, load, authql, floor, cheap, server_cpu, load_cpu, contention)
        report = bench.measure()
        if args.profile:
            with pinned(load_cpu):
                profile_me(
                    load, bench.graphql_me, authql.pid, args.seconds, args.connections, scratch
                )
        return report
    finally:
        cheap.stop()
        floor.stop()
        authql.stop()
        if args.keep or args.profile:
            print(f"\nscratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def median_sample(samples: list[Sample]) -> Sample:
    """Per-field medians of repeated runs (errors and requests summed)."""
    return Sample(
        requests=sum(s.requests for s in samples),
        seconds=sum(s.seconds for s in samples),
        errors=sum(s.errors for s in samples),
        mean_ms=statistics.median(s.mean_ms for s in samples),
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
        connections=samples[0].connections,
        good=sum(s.good for s in samples),
        busy_seconds=sum(s.busy_seconds for s in samples),
        median_rps=statistics.median(s.rps for s in samples),
    )


class Bench:
    """The accounts, targets and measurements of one run against two started servers."""

    def __init__(
        self,
        args: argparse.Namespace,
        settings: Any,
        load: Wrk | PythonLoad,
        authql: Server,
        floor: Server,
        cheap: Server,
        server_cpu: int | None,
        load_cpu: int | None,
        contention: Contention,
    ) -> None:
        self.args = args
        self.settings = settings
        self.load = load
        self.server_cpu = server_cpu
        self.load_cpu = load_cpu
        self.contention = contention
        self.authql = authql
        self.floor = floor
        self.cheap = cheap
        self.verify_times: list[float] = []
        self.verify_other = 0.0

        me_user = graphql(
            authql.port, REGISTER_MUTATION, {"e": "bench-me@example.com", "p": PASSWORD}
        )
        graphql(authql.port, REGISTER_MUTATION, {"e": "bench-login@example.com", "p": PASSWORD})
        account = me_user["register"]
        self.token = account["accessToken"]
        self.user = {"id": account["user"]["id"], "email": account["user"]["email"]}
        auth = {"Authorization": f"Bearer {self.token}"}
        json_type = {"Content-Type": "application/json"}
        expect_user = f'"id":"{self.user["id"]}"'
        self.floor_me = Target(floor.port, "GET", "/me", auth, b"", expect_user)
        self.graphql_me = Target(
            authql.port,
            "POST",
            "/graphql",
            {**auth, **json_type},
            json.dumps({"query": ME_QUERY}).encode(),
            expect_user,
        )
        # The login account is not the `me` account: a login publishes events that (rightly)
        # drop that user's cached principal; the burst should test the event loop, not that.
        self.login_variables = {"i": "bench-login@example.com", "p": PASSWORD}
        self.login = Target(
            authql.port,
            "POST",
            "/graphql",
            json_type,
            json.dumps({"query": LOGIN_MUTATION, "variables": self.login_variables}).encode(),
            '"accessToken":"',
        )
        self.cheap_variables = {"i": "bench-cheap@example.com", "p": PASSWORD}
        graphql(cheap.port, REGISTER_MUTATION, {"e": self.cheap_variables["i"], "p": PASSWORD})
        self.cheap_login = Target(
            cheap.port,
            "POST",
            "/graphql",
            json_type,
            json.dumps({"query": LOGIN_MUTATION, "variables": self.cheap_variables}).encode(),
            '"accessToken":"',
        )

    def sanity(self) -> None:
        """Every target answers what the load generators will check for."""
        status, body = http_request(
            self.floor.port, "GET", "/me", headers={"Authorization": f"Bearer {self.token}"}
        )
        if status != 200 or json.loads(body) != self.user:
            raise BenchError(f"floor /me answered {status} {body[:300]!r}")
        me = graphql(self.authql.port, ME_QUERY, token=self.token)["me"]
        if me != self.user:
            raise BenchError(f"GraphQL me answered {me}, expected {self.user}")
        graphql(self.authql.port, LOGIN_MUTATION, self.login_variables)
        graphql(self.cheap.port, LOGIN_MUTATION, self.cheap_variables)

    def time_verifies(self) -> None:
        """Add argon2 verify timings (server parameters, server core) to the ceiling pool."""
        times, other = self.timed(
            argon2_verify_times,
            self.settings.argon2_time_cost,
            self.settings.argon2_memory_kib,
            self.settings.argon2_parallelism,
            self.args.argon2_samples,
            self.server_cpu,
        )
        self.verify_times += times
        self.verify_other = max(self.verify_other, other)

    def timed(self, run: Any, *args: Any) -> tuple[Any, float]:
        """``run(*args)`` and the foreign CPU share during it."""
        start = self.contention.begin()
        result = run(*args)
        return result, self.contention.end(start)

    def drain(self) -> None:
        """Let verifies still queued after a login run finish before the next run starts."""
        verify = statistics.median(self.verify_times) if self.verify_times else 0.3
        time.sleep(verify * self.args.login_connections + 0.5)

    def measure(self) -> Report:
        args, load = self.args, self.load
        seconds, conns, login_conns = args.seconds, args.connections, args.login_connections
        self.sanity()
        generator = "wrk" if isinstance(load, Wrk) else "python asyncio"
        where = (
            f"servers on cpu {self.server_cpu}, load on cpu {self.load_cpu}"
            if self.server_cpu is not None
            else "unpinned"
        )
        print(
            f"\nauthql bench: {seconds:g} s per run, floor/me x{args.rounds}, {conns} connections "
            f"(login {login_conns}), {generator}, {where}",
            flush=True,
        )
        floor_runs: list[Sample] = []
        me_runs: list[Sample] = []
        other: dict[str, list[float]] = {"floor": [], "me": []}
        with pinned(self.load_cpu):  # the in-process generator runs on the load core too
            if args.warmup > 0:
                load.run("warmup-floor", self.floor_me, args.warmup, conns)
                load.run("warmup-me", self.graphql_me, args.warmup, conns)
            # Alternating rounds: slow drift on a shared machine hits both sides alike.
            for index in range(max(1, args.rounds)):
                sample, share = self.timed(load.run, f"floor{index}", self.floor_me, seconds, conns)
                floor_runs.append(sample)
                other["floor"].append(share)
                sample, share = self.timed(load.run, f"me{index}", self.graphql_me, seconds, conns)
                me_runs.append(sample)
                other["me"].append(share)

            # The ceiling is timed right before and right after the login run, on its core.
            self.time_verifies()
            login_s, login_other = self.timed(
                lambda: load.run("login", self.login, 2 * seconds, login_conns)
            )
            self.time_verifies()
            self.drain()
            rest_s, rest_other = self.timed(
                load.run, "login-cheap", self.cheap_login, seconds, login_conns
            )

            def probe() -> Sample:
                return run_async(open_loop(self.graphql_me, args.probe_rate, seconds, conns))  # type: ignore[no-any-return]

            probe_idle, probe_idle_other = self.timed(probe)
            (probe_burst, burst_login), probe_burst_other = self.timed(
                lambda: with_burst(load, self.login, seconds, login_conns, probe)
            )
            self.drain()
            (sat_burst, sat_login), sat_other = self.timed(
                lambda: with_burst(
                    load,
                    self.login,
                    seconds,
                    login_conns,
                    lambda: load.run("me-sat", self.graphql_me, seconds, conns),
                )
            )
            self.drain()

        floor_s, me_s = median_sample(floor_runs), median_sample(me_runs)
        checks = ((floor_s, "floor"), (me_s, "me"), (login_s, "login"), (rest_s, "cheap login"))
        for sample, what in checks:
            if sample.good <= 0:
                raise BenchError(f"{what}: no successful request at all")
        verify_s = statistics.median(self.verify_times)
        ceiling = 1 / verify_s
        cheap_verify_s = statistics.median(
            argon2_verify_times(
                CHEAP_ARGON2["TIME_COST"],
                CHEAP_ARGON2["MEMORY_KIB"],
                CHEAP_ARGON2["PARALLELISM"],
                max(5, args.argon2_samples),
                self.server_cpu,
            )
        )
        rest_ms = max(0.0, 1000 / rest_s.rps - 1000 * cheap_verify_s) if rest_s.rps else 0.0
        login_bound = verify_s / (verify_s + rest_ms / 1000)
        rate = f"@{args.probe_rate:g}/s"
        rows = [
            Row.of("floor GET /me", floor_s, max(other["floor"]), f"median of {args.rounds}"),
            Row.of("graphql me", me_s, max(other["me"]), f"median of {args.rounds}"),
            Row.of(
                "graphql login",
                login_s,
                login_other,
                f"{login_s.rps:.2f}/s raw (responses/duration)",
                rps=login_s.completion_rps,
            ),
            Row.of(
                "login, argon2 minimal",
                rest_s,
                rest_other,
                f"rest of a login {rest_ms:.2f} ms -> bound {100 * login_bound:.1f}%",
            ),
            Row.of(f"me {rate}, idle", probe_idle, probe_idle_other, "open loop"),
            Row.of(
                f"me {rate}, login burst",
                probe_burst,
                probe_burst_other,
                f"open loop; logins {burst_login.completion_rps:.2f}/s",
            ),
            Row.of(
                "me, login burst",
                sat_burst,
                sat_other,
                f"closed loop; logins {sat_login.completion_rps:.2f}/s",
            ),
        ]
        report = Report(
            settings={
                "seconds": seconds,
                "rounds": args.rounds,
                "connections": conns,
                "login_connections": login_conns,
                "probe_rate": args.probe_rate,
                "loadgen": generator,
                "pinned": self.server_cpu is not None,
                "argon2": {
                    "time_cost": self.settings.argon2_time_cost,
                    "memory_kib": self.settings.argon2_memory_kib,
                    "parallelism": self.settings.argon2_parallelism,
                },
            },
            argon2_verify_ms=1000 * verify_s,
            argon2_other_cpu=self.verify_other,
            rows=rows,
            me_over_floor=me_s.rps / floor_s.rps if floor_s.rps else 0.0,
            login_over_ceiling=login_s.completion_rps / ceiling,
            login_rest_ms=rest_ms,
            login_bound=login_bound,
            me_p99_idle_ms=probe_idle.p99_ms,
            me_p99_burst_ms=probe_burst.p99_ms,
            rounds=[
                {
                    "floor_rps": f.rps,
                    "floor_p99_ms": f.p99_ms,
                    "floor_other_cpu": f_other,
                    "me_rps": m.rps,
                    "me_p99_ms": m.p99_ms,
                    "me_other_cpu": m_other,
                }
                for f, f_other, m, m_other in zip(
                    floor_runs, other["floor"], me_runs, other["me"], strict=True
                )
            ],
        )
        print_report(report, self.settings, len(self.verify_times))
        return report


def with_burst(
    load: Wrk | PythonLoad, login: Target, seconds: float, login_conns: int, measure: Any
) -> tuple[Sample, Sample]:
    """Run ``measure()`` while a closed-loop login burst hits the same server."""
    if isinstance(load, Wrk):
        handle = load.start("burst", login, seconds, login_conns)
        try:
            measured = measure()
        finally:
            burst = load.finish(handle)
        return measured, burst

    # Python fallback: the burst runs in a thread with its own event loop.
    import threading

    result: list[Sample] = []
    thread = threading.Thread(
        target=lambda: result.append(run_async(closed_loop(login, seconds, login_conns)))
    )
    thread.start()
    measured = measure()
    thread.join()
    if not result:
        raise BenchError("login burst generator failed")
    return measured, result[0]


def print_report(report: Report, settings: Any, verifies: int) -> None:
    ceiling = 1000 / report.argon2_verify_ms
    print(
        f"argon2id t={settings.argon2_time_cost} m={settings.argon2_memory_kib} KiB "
        f"p={settings.argon2_parallelism}: one verify {report.argon2_verify_ms:.1f} ms "
        f"(median of {verifies}, around the login run; other {100 * report.argon2_other_cpu:.0f}%)"
        f" -> ceiling {ceiling:.2f} logins/s"
    )
    print(f"\n{'':24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'other':>6}  note")
    for line in report.rows:
        print(
            f"{line.name:24} {line.rps:9.2f} {line.p50_ms:8.2f} {line.p99_ms:8.2f} "
            f"{line.errors:6d} {100 * line.other_cpu:5.0f}%  {line.note}"
        )
    idle, burst = report.me_p99_idle_ms, report.me_p99_burst_ms
    login = report.rows[2].rps
    print(
        f"\nme / floor          {report.me_over_floor:5.2f}x   (target >= 1.00x)\n"
        f"login / ceiling     {100 * report.login_over_ceiling:5.1f}%   (target >= 95%; "
        f"{login:.2f}/s of 1/verify = {ceiling:.2f}/s)\n"
        f"  bound from cost   {100 * report.login_bound:5.1f}%   (verify / (verify + "
        f"{report.login_rest_ms:.2f} ms of non-argon2 work per login); less noise-prone\n"
        f"me p99 under burst  {burst:5.2f} ms vs {idle:.2f} ms idle "
        f"({burst / idle if idle else 0:.1f}x; target: flat)\n"
        "other: CPU other processes took on the bench's CPUs meanwhile (% of one CPU); "
        "rows with more than a few % are noisy"
    )
    if report.argon2_other_cpu > 0.05 or any(line.other_cpu > 0.05 for line in report.rows):
        print("warning: the machine was not quiet during the run; rerun with --wait-idle 300")


if __name__ == "__main__":
    sys.exit(main())
