"""The worker: dial the controller, run its tasks one at a time, send the results back.

Tasks run in the main thread; a second thread runs the connection (asyncio with TLS), so the
worker hears EXIT and CANCEL and notices a vanished controller while a task runs. Imports stay
light: no pandas, no boto3.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import importlib.util
import logging
import os
import pickle
import platform
import queue
import random
import signal
import socket
import sys
import threading
import time
import traceback
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from batchcrew import protocol
from batchcrew.protocol import Frame, Kind
from batchcrew.tls import certificate_matches, client_context
from batchcrew.version import __version__

logger = logging.getLogger("batchcrew.worker")

SECONDS_HEARTBEAT = 5.0
FUNCTIONS_CACHED = 64
"""Function pickles each side remembers per connection; both sides evict alike."""


@dataclass(frozen=True)
class WorkerSettings:
    """Where and how a worker connects, read from its environment.

    Example:
        >>> settings = WorkerSettings.from_environment({
        ...     "BATCHCREW_HOST": "127.0.0.1", "BATCHCREW_PORT": "5000",
        ...     "BATCHCREW_TOKEN": "secret", "BATCHCREW_LAUNCH": "a1"})
        >>> settings.port, settings.index
        (5000, 0)
    """

    host: str
    port: int
    token: str
    launch: str
    index: int = 0
    fingerprint: str | None = None
    seconds_timeout: float = 60.0

    @classmethod
    def from_environment(cls, environment: Mapping[str, str]) -> WorkerSettings:
        """Read `BATCHCREW_*` variables (and `AWS_BATCH_JOB_ARRAY_INDEX` on AWS Batch)."""
        missing = [
            name
            for name in ("BATCHCREW_HOST", "BATCHCREW_PORT", "BATCHCREW_TOKEN", "BATCHCREW_LAUNCH")
            if not environment.get(name)
        ]
        if missing:
            raise ValueError(f"the worker needs the environment variables {', '.join(missing)}")
        index = environment.get("BATCHCREW_INDEX") or environment.get("AWS_BATCH_JOB_ARRAY_INDEX")
        try:
            return cls(
                host=environment["BATCHCREW_HOST"],
                port=int(environment["BATCHCREW_PORT"]),
                token=environment["BATCHCREW_TOKEN"],
                launch=environment["BATCHCREW_LAUNCH"],
                index=int(index or 0),
                fingerprint=environment.get("BATCHCREW_FINGERPRINT") or None,
                seconds_timeout=float(environment.get("BATCHCREW_SECONDS_TIMEOUT", "60")),
            )
        except ValueError as error:
            raise ValueError(f"a BATCHCREW_* variable is malformed: {error}") from None


def versions() -> dict[str, str]:
    """The versions a worker and its controller must agree on.

    Example:
        >>> sorted(versions())
        ['batchcrew', 'cloudpickle', 'protocol', 'python']
    """
    return {
        "protocol": str(protocol.PROTOCOL_VERSION),
        "batchcrew": __version__,
        "python": ".".join(platform.python_version_tuple()[:2]),
        "cloudpickle": cloudpickle.__version__,
    }


class FunctionCache:
    """Function pickles by key, least recently used evicted first.

    Controller and worker keep one each per connection and update them in the same order, so
    the controller knows which functions the worker already holds and sends each only once.

    Example:
        >>> cache = FunctionCache(capacity=1)
        >>> cache.seen("a"), cache.seen("a")
        (False, True)
    """

    def __init__(self, capacity: int = FUNCTIONS_CACHED) -> None:
        self.capacity = capacity
        self._items: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def seen(self, key: str, data: bytes = b"") -> bool:
        """Note a use of `key`; True if it was held already (then `data` is ignored)."""
        if key in self._items:
            self._items.move_to_end(key)
            return True
        self._items[key] = data
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return False

    def get(self, key: str) -> bytes:
        """The pickle stored for `key`."""
        return self._items[key]


def function_key(data: bytes) -> str:
    """The cache key of a function pickle.

    Example:
        >>> len(function_key(b"abc"))
        32
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class _Interrupted(BaseException):
    """Raised in the main thread to stop a running task (timeout or cancel)."""


@dataclass
class _Running:
    name: str | None = None
    reason: str | None = None


class _Connection:
    """The worker's side of the connection, run by an event loop in a background thread."""

    def __init__(self, settings: WorkerSettings, inbox: queue.SimpleQueue[Any]) -> None:
        self.settings = settings
        self.inbox = inbox
        self.loop = asyncio.new_event_loop()
        self.writer: asyncio.StreamWriter | None = None
        self.running = _Running()
        self.cancelled: set[str] = set()
        self.functions = FunctionCache()
        self.main_thread = threading.get_ident()
        self.last_heard = time.monotonic()
        self.ready = threading.Event()
        self.refusal: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="batchcrew-connection", daemon=True).start()

    def send(self, data: bytes) -> None:
        self.loop.call_soon_threadsafe(self._write, data)

    def _write(self, data: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self._session())
        except Exception as error:  # noqa: BLE001 (whatever ends the session ends the worker)
            logger.error("connection failed: %s", error)
        # The controller is gone or refused us: nothing more can be delivered.
        self.ready.set()
        self.inbox.put(None)
        if self.running.name is not None:
            os._exit(0 if self.refusal is None else 3)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        settings = self.settings
        deadline = time.monotonic() + settings.seconds_timeout
        pause = 0.05
        while True:
            try:
                context = client_context() if settings.fingerprint else None
                return await asyncio.wait_for(
                    asyncio.open_connection(settings.host, settings.port, ssl=context),
                    timeout=max(1.0, deadline - time.monotonic()),
                )
            except (OSError, asyncio.TimeoutError) as error:
                if time.monotonic() >= deadline:
                    raise ConnectionError(
                        f"cannot reach the controller at {settings.host}:{settings.port}: {error}"
                    ) from None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _session(self) -> None:
        settings = self.settings
        reader, writer = await self._connect()
        if settings.fingerprint:
            ssl_object = writer.get_extra_info("ssl_object")
            certificate = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            if not certificate_matches(certificate, settings.fingerprint):
                writer.close()
                self.refusal = "the controller's certificate does not match the pinned fingerprint"
                raise ConnectionError(self.refusal)
        self.writer = writer
        hello = {
            "token": settings.token,
            "launch": settings.launch,
            "index": settings.index,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            **versions(),
        }
        writer.write(protocol.encode(Kind.HELLO, hello))
        frame = await asyncio.wait_for(
            protocol.read_frame(reader, 0), timeout=settings.seconds_timeout
        )
        if frame is None or frame.kind is not Kind.WELCOME:
            reason = frame.header.get("reason") if frame is not None else None
            self.refusal = str(reason or "the controller closed the connection")
            raise ConnectionError(f"refused by the controller: {self.refusal}")
        self.ready.set()
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            while True:
                frame = await protocol.read_frame(reader, protocol.BODY_BYTES_MAX)
                if frame is None:
                    logger.info("the controller closed the connection")
                    return
                self.last_heard = time.monotonic()
                self._receive(frame)
                if frame.kind is Kind.EXIT:
                    await writer.drain()
                    return
        finally:
            heartbeat.cancel()
            writer.close()

    def _receive(self, frame: Frame) -> None:
        if frame.kind is Kind.TASK:
            header = frame.header
            size = int(header.get("function_size", 0))
            key = str(header["function"])
            self.functions.seen(key, frame.body[:size])
            self.inbox.put((header, self.functions.get(key), frame.body[size:]))
        elif frame.kind is Kind.EXIT:
            logger.info("told to exit: %s", frame.header.get("reason"))
        elif frame.kind is Kind.CANCEL:
            name = str(frame.header["name"])
            self.cancelled.add(name)
            if self.running.name == name:
                self.interrupt(name, "cancel")

    def interrupt(self, name: str, reason: str) -> None:
        if self.running.name == name:
            self.running.reason = reason
            signal.pthread_kill(self.main_thread, signal.SIGUSR1)

    async def _heartbeat(self) -> None:
        beat = protocol.encode(Kind.HEARTBEAT, {})
        while True:
            await asyncio.sleep(SECONDS_HEARTBEAT)
            if self.writer is not None:
                self.writer.write(beat)
            silent = time.monotonic() - self.last_heard
            if silent > self.settings.seconds_timeout:
                logger.error("no word from the controller for %.0f s; exiting", silent)
                if self.writer is not None:
                    self.writer.close()
                return


class _Runner:
    """Runs tasks in the main thread and reports their outcomes."""

    def __init__(self, connection: _Connection) -> None:
        self.connection = connection
        self.functions: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.numpy: types.ModuleType | None = None
        self.numpy_checked = False

    def function(self, key: str, data: bytes) -> Any:
        fn = self.functions.get(key)
        if fn is None:
            fn = pickle.loads(data)
            self.functions[key] = fn
            if len(self.functions) > FUNCTIONS_CACHED:
                self.functions.popitem(last=False)
        return fn

    def seed(self, seed: int) -> None:
        random.seed(seed)
        if not self.numpy_checked:
            self.numpy_checked = True
            if importlib.util.find_spec("numpy") is not None:
                import numpy

                self.numpy = numpy
        if self.numpy is not None:
            self.numpy.random.seed([seed & 0xFFFFFFFF, seed >> 32])

    def run(self, header: dict[str, Any], function_data: bytes, arguments: bytes) -> bytes:
        name = str(header["name"])
        connection = self.connection
        if name in connection.cancelled:
            connection.cancelled.discard(name)
            return _result_frame(name, "cancel", 0.0, error="cancelled before it started")
        timeout = header.get("seconds_timeout")
        timer: asyncio.TimerHandle | None = None
        started = time.perf_counter()
        value: Any = None
        status, error, trace = "success", None, None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                connection.running.name = name
                connection.running.reason = None
                if timeout is not None:
                    timer = _call_later(connection, float(timeout), name)
                fn = self.function(str(header["function"]), function_data)
                args, kwargs = pickle.loads(arguments)
                self.seed(int(header["seed"]))
                started = time.perf_counter()
                value = fn(*args, **kwargs)
                connection.running.name = None
            except _Interrupted:
                connection.running.name = None
                status = connection.running.reason or "cancel"
                error = f"timed out after {timeout:g} s" if status == "timeout" else "cancelled"
            except BaseException as exception:  # noqa: BLE001 (every task failure is reported)
                connection.running.name = None
                status, trace = "error", traceback.format_exc()
                error = f"{type(exception).__name__}: {exception}"
            finally:
                if timer is not None:
                    timer.cancel()
        connection.cancelled.discard(name)
        seconds = time.perf_counter() - started
        notes = tuple(f"{w.category.__name__}: {w.message}" for w in caught)
        if status != "success":
            return _result_frame(name, status, seconds, error=error, trace=trace, notes=notes)
        try:
            body = cloudpickle.dumps(value, protocol=protocol.PICKLE_PROTOCOL)
        except Exception as exception:  # noqa: BLE001 (an unpicklable value is a task error)
            error = f"the result could not be pickled: {type(exception).__name__}: {exception}"
            return _result_frame(name, "error", seconds, error=error, notes=notes)
        return _result_frame(name, "success", seconds, notes=notes, body=body)


def _call_later(connection: _Connection, seconds: float, name: str) -> asyncio.TimerHandle:
    holder: list[asyncio.TimerHandle] = []
    ready = threading.Event()

    def schedule() -> None:
        holder.append(connection.loop.call_later(seconds, connection.interrupt, name, "timeout"))
        ready.set()

    connection.loop.call_soon_threadsafe(schedule)
    ready.wait()
    return holder[0]


def _result_frame(
    name: str,
    status: str,
    seconds: float,
    *,
    error: str | None = None,
    trace: str | None = None,
    notes: tuple[str, ...] = (),
    body: bytes = b"",
) -> bytes:
    header = {"name": name, "status": status, "seconds": seconds}
    if error is not None:
        header["error"] = error
    if trace is not None:
        header["traceback"] = trace
    if notes:
        header["warnings"] = list(notes)
    return protocol.encode(Kind.RESULT, header, body)


def run(settings: WorkerSettings) -> int:
    """Run a worker until the controller tells it to exit or goes away; return the exit code.

    Example:
        >>> run(WorkerSettings.from_environment(os.environ))  # doctest: +SKIP
    """
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    connection = _Connection(settings, inbox)

    def interrupt_task(signal_number: int, frame: types.FrameType | None) -> None:
        # Only while the task is still running: a late signal must not hit the worker's loop.
        if connection.running.name is not None and connection.running.reason is not None:
            raise _Interrupted()

    signal.signal(signal.SIGUSR1, interrupt_task)
    connection.start()
    runner = _Runner(connection)
    while True:
        item = inbox.get()
        if item is None:
            break
        header, function_data, arguments = item
        connection.send(runner.run(header, function_data, arguments))
    if connection.refusal is not None:
        print(f"batchcrew worker: {connection.refusal}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m batchcrew.worker`: settings come from the environment.

    Example:
        >>> main([])  # doctest: +SKIP
    """
    argparse.ArgumentParser(
        prog="batchcrew worker",
        description="Run a batchcrew worker; its settings come from BATCHCREW_* variables.",
    ).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = WorkerSettings.from_environment(os.environ)
    except ValueError as error:
        print(f"batchcrew worker: {error}", file=sys.stderr)
        return 2
    return run(settings)


def add_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `batchcrew worker` to the command line.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser()
        >>> add_command(parser.add_subparsers())
    """
    parser = subparsers.add_parser(
        "worker",
        help="run a worker (settings from BATCHCREW_* environment variables)",
        description="Run a batchcrew worker; its settings come from BATCHCREW_* variables.",
    )
    parser.set_defaults(handler=lambda arguments: main([]))


if __name__ == "__main__":
    sys.exit(main())
