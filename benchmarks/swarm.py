"""Scale without a thousand processes: a real controller, simulated workers on real TLS.

A few swarm processes each hold hundreds of connections that speak the worker's protocol
(TLS, fingerprint pin, HELLO, WELCOME, TASK -> RESULT with pickled values), so the controller
sees 10, 100 or 1,000 workers while the machine runs a handful of processes. It measures the
controller only: its CPU time per task, its memory per connected worker, and the time it takes
to admit a burst of new workers (the handshake storm of a large array job).

`python benchmarks/swarm.py --workers 100` takes the measures once and prints one JSON line;
the suite (`benchmarks/suite.py --measures swarm`) repeats them and makes the table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import multiprocessing.connection
import os
import pickle
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import batchcrew as bc
from batchcrew import protocol
from batchcrew.protocol import Frame, FrameParser, FunctionCache, Kind
from batchcrew.serialization import dumps_value
from batchcrew.tls import certificate_matches, client_context
from launchers import SwarmLauncher
from machine import status_megabytes
from tasks import negate

SECONDS_ADMISSION_MAX = 300.0
"""How long a burst of connections may take to be admitted before the run fails."""

SECONDS_CONNECT_RETRY_MAX = 2.0
"""The longest pause between a simulated worker's connection attempts (as the real worker)."""


@dataclass(frozen=True)
class SwarmMeasures:
    """What one run of the swarm found about the controller.

    Example:
        >>> SwarmMeasures(10, 12.5, 40.0, 0.2).workers
        10
    """

    workers: int
    cpu_microseconds_per_task: float
    kilobytes_per_worker: float
    admission_seconds: float


def measure(workers: int, tasks: int, processes: int) -> SwarmMeasures:
    """Admit `workers` simulated workers in one burst, then run `tasks` trivial tasks on them."""
    _raise_file_limit()
    with _swarm(processes) as swarm:
        crew = bc.Controller(
            SwarmLauncher(swarm.open), workers=workers, seconds_idle=3600, seconds_launch=300
        )
        try:
            crew.start()
            gc.collect()
            before = status_megabytes("VmRSS")
            swarm.hold_first_tasks(workers)
            started = time.perf_counter()
            crew.walk(negate, range(workers))
            if not crew.wait(timeout=SECONDS_ADMISSION_MAX):
                raise TimeoutError(f"{workers} workers were not admitted in time")
            admission = time.perf_counter() - started
            answered = {result.worker for result in crew.collect()}
            if len(answered) != workers:
                raise AssertionError(f"{len(answered)} of {workers} workers answered a task")
            gc.collect()
            grown = status_megabytes("VmRSS") - before
            cpu = _cpu_seconds()
            crew.map(negate, range(tasks))
            cpu = _cpu_seconds() - cpu
        finally:
            crew.terminate()
    return SwarmMeasures(workers, cpu / tasks * 1e6, grown * 1000 / workers, admission)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_file_limit() -> None:
    """One descriptor per connection: lift the soft limit to the hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class _Swarm:
    """The controller's side of the swarm processes: opens connections, holds first tasks.

    While a burst is held, every simulated worker keeps its first task unanswered until all of
    them have one; then all answer. So each worker of the burst runs exactly one task, and the
    admission time covers every worker's handshake, HELLO, WELCOME, task and result.
    """

    def __init__(self, pipes: list[multiprocessing.connection.Connection]) -> None:
        self.pipes = pipes
        self.lock = threading.Lock()
        self.holding = 0
        self.expected = 0

    def open(self, environment: Mapping[str, str], count: int) -> None:
        """Share `count` new connections of one launch among the swarm processes."""
        with self.lock:
            for share, pipe in enumerate(self.pipes):
                indices = range(share, count, len(self.pipes))
                if indices:
                    pipe.send(("open", dict(environment), list(indices)))

    def hold_first_tasks(self, count: int) -> None:
        """Hold first tasks until `count` workers hold one (then release them all)."""
        with self.lock:
            self.expected, self.holding = count, 0
            for pipe in self.pipes:
                pipe.send(("hold", None, []))

    def listen(self) -> None:
        """Count the workers holding a first task; release them when all do (a thread)."""
        live = list(self.pipes)
        while live:
            for pipe in multiprocessing.connection.wait(live):
                assert isinstance(pipe, multiprocessing.connection.Connection)
                try:
                    pipe.recv()
                except EOFError:
                    live.remove(pipe)
                    continue
                with self.lock:
                    self.holding += 1
                    if self.holding == self.expected:
                        for each in self.pipes:
                            each.send(("release", None, []))


@contextmanager
def _swarm(processes: int) -> Iterator[_Swarm]:
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for _ in range(processes):
        ours, theirs = context.Pipe()
        child = context.Process(target=_swarm_process, args=(theirs,), daemon=True)
        child.start()
        theirs.close()
        pipes.append(ours)
        children.append(child)
    swarm = _Swarm(pipes)
    listener = threading.Thread(target=swarm.listen, daemon=True)
    listener.start()
    try:
        yield swarm
    finally:
        for pipe in pipes:
            pipe.send(("stop", None, []))
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join()
        listener.join(timeout=10)


def _swarm_process(pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of one swarm process: obey the coordinator until told to stop."""
    _raise_file_limit()
    asyncio.run(_SwarmProcess(pipe).serve())


class _SwarmProcess:
    """Many simulated workers on one event loop."""

    def __init__(self, pipe: multiprocessing.connection.Connection) -> None:
        self.pipe = pipe
        self.released = asyncio.Event()
        self.released.set()
        self.functions: dict[str, Callable[..., Any]] = {}
        self.writers: set[asyncio.StreamWriter] = set()
        self.workers: set[asyncio.Task[None]] = set()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        loop.add_reader(self.pipe.fileno(), self._command, stopped)
        beats = asyncio.create_task(self._heartbeats())
        await stopped
        beats.cancel()
        for writer in list(self.writers):
            writer.close()
        for worker in list(self.workers):
            worker.cancel()

    def _command(self, stopped: asyncio.Future[None]) -> None:
        what, environment, indices = self.pipe.recv()
        if what == "open":
            for index in indices:
                worker = asyncio.create_task(self._worker(environment, index))
                self.workers.add(worker)
                worker.add_done_callback(self.workers.discard)
        elif what == "hold":
            self.released.clear()
        elif what == "release":
            self.released.set()
        elif what == "stop" and not stopped.done():
            stopped.set_result(None)

    async def _heartbeats(self) -> None:
        beat = protocol.encode(Kind.HEARTBEAT, {})
        while True:
            await asyncio.sleep(protocol.SECONDS_HEARTBEAT)
            for writer in list(self.writers):
                writer.write(beat)

    async def _worker(self, environment: Mapping[str, str], index: int) -> None:
        """One simulated worker: the handshake of `batchcrew.worker`, then tasks until EXIT."""
        reader, writer = await self._connect(environment)
        self.writers.add(writer)
        try:
            hello = {
                "token": environment["BATCHCREW_TOKEN"],
                "launch": environment["BATCHCREW_LAUNCH"],
                "index": index,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                **protocol.versions(),
            }
            writer.write(protocol.encode(Kind.HELLO, hello))
            parser = FrameParser(protocol.BODY_BYTES_MAX)
            cache = FunctionCache()
            first = True
            while data := await reader.read(1 << 18):
                for frame in parser.feed(data):
                    if frame.kind is Kind.REFUSE:
                        print(f"refused: {frame.header.get('reason')}", file=sys.stderr)
                        return
                    if frame.kind is Kind.EXIT:
                        return
                    if frame.kind is not Kind.TASK:
                        continue
                    if first:
                        first = False
                        self.pipe.send("holding")
                        await self.released.wait()
                    writer.write(self._answer(frame, cache))
        except (OSError, ConnectionError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _connect(
        self, environment: Mapping[str, str]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect and check the pin, retrying refused connections as the real worker does."""
        host, port = environment["BATCHCREW_HOST"], int(environment["BATCHCREW_PORT"])
        fingerprint = environment.get("BATCHCREW_FINGERPRINT") or None
        pause = 0.05
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=client_context() if fingerprint else None
                )
                break
            except OSError:
                await asyncio.sleep(pause)
                pause = min(pause * 2, SECONDS_CONNECT_RETRY_MAX)
        if fingerprint is not None:
            certificate = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            if not certificate_matches(certificate, fingerprint):
                writer.close()
                raise ConnectionRefusedError("the controller's certificate does not match")
        return reader, writer

    def _answer(self, frame: Frame, cache: FunctionCache) -> bytes:
        """Run a task as the worker does and frame its result."""
        header = frame.header
        size = int(header.get("function_size", 0))
        key = str(header["function"])
        cache.seen(key, bytes(frame.body[:size]))
        fn = self.functions.get(key)
        if fn is None:
            fn = self.functions[key] = pickle.loads(cache.get(key))
        args, kwargs = pickle.loads(frame.body[size:])
        body = dumps_value(fn(*args, **kwargs))
        result = {"name": header["name"], "status": "success", "seconds": 0.0}
        return protocol.encode(Kind.RESULT, result, body)


def main(argv: list[str] | None = None) -> int:
    """Measure once at one size and print the measures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=100, help="simulated workers")
    parser.add_argument("--tasks", type=int, default=20_000, help="trivial tasks after admission")
    parser.add_argument("--processes", type=int, default=2, help="swarm processes")
    arguments = parser.parse_args(argv)
    found = measure(arguments.workers, arguments.tasks, arguments.processes)
    print(json.dumps(found.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
