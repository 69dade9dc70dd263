"""The worker: dial the controller, run its tasks one at a time, send the results back.

The main thread reads a task, runs it and sends its result with no thread hop; a watchdog
thread listens only while a task runs (CANCEL, a vanished controller) and sends heartbeats.
Imports stay light: no pandas, no boto3.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import pickle
import random
import select
import signal
import socket
import sys
import threading
import time
import traceback
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchcrew import protocol
from batchcrew.channel import Channel
from batchcrew.errors import CertificateMismatch, ProtocolError
from batchcrew.imports import when_imported
from batchcrew.messages import Body, Outcome, Status
from batchcrew.protocol import (
    FUNCTIONS_CACHED,
    SECONDS_HEARTBEAT,
    FunctionCache,
    Kind,
    versions,
)
from batchcrew.seeds import numpy_seed
from batchcrew.serialization import dumps_value, load_value, pickle_value

logger = logging.getLogger("batchcrew.worker")


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


class _Interrupted(BaseException):
    """Raised in the main thread to stop a running task (timeout or cancel)."""


@dataclass
class _Running:
    """What the main thread runs now, and what has been asked of it.

    `name`: the task running (None between tasks); `target`: the task a CANCEL is aimed at;
    `reason`: why it is being stopped; `interrupted`: a stop was raised already (a second
    signal must not escape the first one's handling); `cancelled`: names whose CANCEL came
    before the task started.
    """

    name: str | None = None
    target: str | None = None
    reason: str | None = None
    interrupted: bool = False
    cancelled: set[str] = field(default_factory=set)
    started: float = 0.0
    seed: int | None = None
    """The seed of the task running, for numpy if the task loads it."""

    def start(self, name: str) -> None:
        self.target, self.reason, self.interrupted = None, None, False
        self.started = time.monotonic()
        self.name = name


class _Watchdog:
    """Listens while a task runs: CANCEL, a vanished or silent controller; sends heartbeats.

    Between tasks, and during the first `SECONDS_ARM` of a task, the main thread alone reads
    the socket, so short tasks cost no system call and no thread hop; the watchdog looks every
    `SECONDS_ARM`, reads only while a task has run longer (edge-triggered, so it never spins),
    and wakes the main thread through a pipe when what it read is left for it.
    """

    def __init__(self, channel: Channel, running: _Running, seconds_timeout: float) -> None:
        self.channel = channel
        self.running = running
        self.seconds_timeout = seconds_timeout
        self.main_thread = threading.get_ident()
        self.last_heard = time.monotonic()
        self.wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self.wake_reader, False)
        self._epoll = select.epoll()
        self._idle_mask = select.EPOLLRDHUP | select.EPOLLET
        self._armed_mask = select.EPOLLIN | self._idle_mask
        self._epoll.register(channel.sock.fileno(), self._idle_mask)
        self._armed = False

    def start(self) -> None:
        threading.Thread(target=self._run, name="batchcrew-watchdog", daemon=True).start()

    def _arm_if_due(self) -> None:
        """Listen while a task has run `SECONDS_ARM` or longer; not otherwise."""
        running = self.running
        due = running.name is not None and time.monotonic() - running.started >= SECONDS_ARM
        if due != self._armed:
            self._armed = due
            mask = self._armed_mask if due else self._idle_mask
            self._epoll.modify(self.channel.sock.fileno(), mask)

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def _run(self) -> None:
        beat = protocol.encode(Kind.HEARTBEAT, {})
        next_beat = time.monotonic() + SECONDS_HEARTBEAT
        while not self.channel.closed:
            wait = min(next_beat - time.monotonic(), SECONDS_ARM)
            events = self._epoll.poll(max(0.0, wait))
            try:
                self._arm_if_due()
                for _, mask in events:
                    if mask & select.EPOLLIN:
                        self._listen()
                    elif mask & (select.EPOLLRDHUP | select.EPOLLHUP):
                        raise ConnectionError("the controller closed the connection")
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + SECONDS_HEARTBEAT
                    self.channel.send(beat)
                    silent = time.monotonic() - self.last_heard
                    if silent > self.seconds_timeout:
                        raise ConnectionError(f"no word from the controller for {silent:.0f} s")
            except (OSError, ProtocolError) as error:
                if not self.channel.closed:  # closed by the worker itself: it is leaving
                    self._lost(error)
                return

    def _listen(self) -> None:
        frames = self.channel.receive()
        self.heard()
        running = self.running
        for frame in frames:
            if frame.kind is Kind.CANCEL:
                name = str(frame.header.get("name"))
                if name == running.name:
                    self.interrupt(name, "cancel")
                elif self.channel.holds_task(name):
                    running.cancelled.add(name)
        if frames and running.name is None:
            os.write(self._wake_writer, b"!")  # the task ended meanwhile: main may be waiting

    def interrupt(self, name: str, reason: str) -> None:
        running = self.running
        if running.name == name:
            running.target, running.reason = name, reason
            signal.pthread_kill(self.main_thread, signal.SIGUSR1)

    def _lost(self, error: BaseException) -> None:
        logger.error("exiting: %s", error)
        busy = self.running.name is not None
        self.channel.close()
        if busy:
            # The result could not be delivered; waiting for the task would only waste the job.
            # Nothing else ends what the task started: the controller that would is gone.
            end_group_members()
            os._exit(0)


class _Runner:
    """Runs tasks in the main thread and frames their outcomes."""

    def __init__(self, running: _Running, channel: Channel) -> None:
        self.running = running
        self.channel = channel
        self.functions: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.setups_run: set[str] = set()

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
        self.running.seed = seed
        numpy_random = sys.modules.get("numpy.random")
        if numpy_random is not None:  # a task that loads numpy later is seeded as it loads
            numpy_random.seed(numpy_seed(seed))

    def run(
        self,
        header: dict[str, Any],
        function_data: bytes,
        arguments: Body,
        setup_data: bytes,
    ) -> list[Body]:
        name = str(header["name"])
        buffers: tuple[memoryview, ...] = ()
        try:
            outcome, buffers = self._run(name, header, function_data, arguments, setup_data)
        except _Interrupted:  # a stop that came as the task ended: the outcome stands
            outcome = Outcome("cancel", error="cancelled")
        except Exception as exception:  # noqa: BLE001 (whatever goes wrong, the worker answers)
            outcome = Outcome(
                "error", error=f"the worker could not report this task: {_describe(exception)}"
            )
        return protocol.result_frame_parts(name, outcome, buffers)

    def _run(
        self,
        name: str,
        header: dict[str, Any],
        function_data: bytes,
        arguments: Body,
        setup_data: bytes,
    ) -> tuple[Outcome, tuple[memoryview, ...]]:
        """The task's outcome, and the large buffers its value refers to (sent after it)."""
        timeout = header.get("seconds_timeout")
        running = self.running
        started = time.perf_counter()
        value: Any = None
        raised: BaseException | None = None
        status: Status = "success"
        error: str | None = None
        trace: str | None = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                running.start(name)
                if name in running.cancelled or self.channel.holds_cancel(name):
                    running.reason = "cancel"
                    raise _Interrupted()
                fn = self.function(str(header["function"]), function_data)
                args, kwargs = load_value(arguments, header.get("buffers") or ())
                setup = header.get("setup")
                if setup is not None and setup not in self.setups_run:
                    self.function(str(setup), setup_data)()  # once per worker, before its task
                    self.setups_run.add(str(setup))
                self.seed(int(header["seed"]))
                if timeout is not None:
                    signal.setitimer(signal.ITIMER_REAL, float(timeout))
                started = time.perf_counter()
                value = fn(*args, **kwargs)
                running.name = None
            except _Interrupted:
                running.name = None
                status = "timeout" if running.reason == "timeout" else "cancel"
                error = f"timed out after {timeout:g} s" if status == "timeout" else "cancelled"
            except BaseException as exception:  # noqa: BLE001 (every task failure is reported)
                running.name = None
                status, trace = "error", _clip(traceback.format_exc(), TRACEBACK_CHARACTERS)
                error, raised = _describe(exception), exception
            finally:
                running.name = None
                running.cancelled.discard(name)
                if timeout is not None:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - started
        notes = tuple(
            _clip(f"{w.category.__name__}: {w.message}", WARNING_CHARACTERS)
            for w in caught[:WARNINGS_KEPT]
        )
        if len(caught) > WARNINGS_KEPT:
            notes += (f"... and {len(caught) - WARNINGS_KEPT} more warnings",)
        if status != "success":
            body = _pickled_exception(raised) if raised is not None else b""
            return Outcome(status, body, error, trace, notes, seconds), ()
        try:
            pickled = pickle_value(value)
        except Exception as exception:  # noqa: BLE001 (an unpicklable value is a task error)
            error = f"the result could not be pickled: {_describe(exception)}"
            return Outcome("error", b"", error, None, notes, seconds), ()
        if pickled.size > protocol.BODY_BYTES_MAX:
            error = (
                f"the result pickles to {pickled.size:,} bytes, over the "
                f"{protocol.BODY_BYTES_MAX:,}-byte limit; write it to storage and return a path"
            )
            return Outcome("error", b"", error, None, notes, seconds), ()
        return Outcome("success", pickled.data, None, None, notes, seconds), pickled.buffers


ERROR_CHARACTERS = 4_000
TRACEBACK_CHARACTERS = 20_000
WARNING_CHARACTERS = 500
WARNINGS_KEPT = 50
"""Limits that keep a RESULT header well under its 64 KiB cap, whatever a task raised."""
EXCEPTION_BYTES_MAX = 1 << 20
"""The largest pickled exception sent back with a failed task."""


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... {len(text) - limit:,} characters cut ...\n{text[-half:]}"


def _describe(exception: BaseException) -> str:
    kind = type(exception).__name__
    try:
        message = str(exception)
    except Exception:  # noqa: BLE001 (an exception whose str() fails still gets reported)
        return f"{kind} (its message could not be shown)"
    return _clip(f"{kind}: {message}" if message else kind, ERROR_CHARACTERS)


def _pickled_exception(exception: BaseException) -> bytes:
    """The exception a task raised, pickled so the controller can raise it again; empty when
    it cannot be pickled or is too large to be worth sending (message and traceback still go)."""
    try:
        data = dumps_value(exception)
    except Exception:  # noqa: BLE001 (an exception that does not pickle still gets reported)
        return b""
    return data if len(data) <= EXCEPTION_BYTES_MAX else b""


SECONDS_ARM = 0.05
"""How long a task runs before the watchdog listens for CANCEL and a vanished controller."""

SECONDS_REFUSED = 5.0
"""How long a worker keeps dialing an address where nothing listens (its controller gone)."""


def _connect(settings: WorkerSettings) -> Channel:
    """Connect (retrying until `seconds_timeout`), say HELLO, and wait to be welcomed."""
    deadline = time.monotonic() + settings.seconds_timeout
    refused_until: float | None = None
    pause = 0.05
    while True:
        try:
            channel = Channel.connect(
                settings.host, settings.port, settings.fingerprint, settings.seconds_timeout
            )
            break
        except CertificateMismatch:
            raise  # someone else answers at that address: trying again will not help
        except ConnectionRefusedError:
            # Nothing listens there: the controller is gone (it listens before it launches).
            # Give it a few seconds, not the whole timeout, so an orphan job costs little.
            if refused_until is None:
                refused_until = time.monotonic() + SECONDS_REFUSED
            if time.monotonic() >= min(deadline, refused_until):
                raise
        except OSError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2.0)
    hello = {
        "token": settings.token,
        "launch": settings.launch,
        "index": settings.index,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **versions(),
    }
    channel.send(protocol.encode(Kind.HELLO, hello))
    waiting = _poller(channel)
    while True:
        frame = channel.pop_frame()
        if frame is not None:
            break
        _wait_readable(waiting, deadline)
        channel.receive()
    if frame.kind is not Kind.WELCOME:
        reason = frame.header.get("reason") or "the controller closed the connection"
        channel.close()
        raise ConnectionRefusedError(f"refused by the controller: {reason}")
    return channel


def _poller(channel: Channel, wake: int | None = None) -> select.poll:
    """A poll set of the socket (and the watchdog's wake-up pipe), made once per connection."""
    poller = select.poll()
    poller.register(channel.sock.fileno(), select.POLLIN | select.POLLRDHUP)
    if wake is not None:
        poller.register(wake, select.POLLIN)
    return poller


def _wait_readable(
    poller: select.poll, deadline: float | None = None, wake: int | None = None
) -> None:
    """Wait until the socket (or the wake-up pipe) has something to read."""
    while True:
        seconds = None if deadline is None else deadline - time.monotonic()
        if seconds is not None and seconds <= 0:
            raise TimeoutError("the controller did not answer in time")
        events = poller.poll(None if seconds is None else seconds * 1000)
        if events:
            if wake is not None and any(fd == wake for fd, _ in events):
                with contextlib.suppress(BlockingIOError):
                    os.read(wake, 4096)
            return


def serve(channel: Channel, settings: WorkerSettings) -> None:
    """Run tasks from a welcomed channel until EXIT or until the controller is gone."""
    running = _Running()
    watchdog = _Watchdog(channel, running, settings.seconds_timeout)
    runner = _Runner(running, channel)
    functions = FunctionCache()

    def interrupt_task(signal_number: int, frame: types.FrameType | None) -> None:
        # Only the task aimed at, only while it runs, only once: a late or second signal must
        # not hit the worker's own loop.
        if running.name is None or running.interrupted:
            return
        if signal_number == signal.SIGALRM:
            running.reason = "timeout"
        elif running.target != running.name:
            return
        running.interrupted = True
        raise _Interrupted()

    signal.signal(signal.SIGUSR1, interrupt_task)
    signal.signal(signal.SIGALRM, interrupt_task)
    _hide_from_forked_children(channel)
    when_imported("numpy.random", lambda numpy_random: _seed_numpy(numpy_random, running))
    waiting = _poller(channel, watchdog.wake_reader)
    watchdog.start()
    while True:
        frame = channel.pop_frame()
        if frame is None:
            _wait_readable(waiting, wake=watchdog.wake_reader)
            channel.receive()
            watchdog.heard()
            continue
        if frame.kind is Kind.TASK:
            header, body = frame.header, memoryview(frame.body)
            start = 0
            setup_data = b""
            setup = header.get("setup")
            if setup is not None:  # the same cache updates, in the same order, as the server's
                start = int(header.get("setup_size", 0))
                functions.seen(str(setup), bytes(body[:start]))
                setup_data = functions.get(str(setup))
            size = int(header.get("function_size", 0))
            key = str(header["function"])
            functions.seen(key, bytes(body[start : start + size]))
            result = runner.run(header, functions.get(key), body[start + size :], setup_data)
            channel.send_parts(result)
        elif frame.kind is Kind.CANCEL:
            name = str(frame.header.get("name"))
            if channel.holds_task(name):
                running.cancelled.add(name)
        elif frame.kind is Kind.EXIT:
            logger.info("told to exit: %s", frame.header.get("reason"))
            return


def _seed_numpy(numpy_random: types.ModuleType, running: _Running) -> None:
    """numpy's global generator, loaded by a task as it runs: seeded for that task, so its
    first draws are as reproducible as those of every later task."""
    if running.name is not None and running.seed is not None:
        numpy_random.seed(numpy_seed(running.seed))


_held_connection: list[Channel] = []
"""The connection a process forked from this worker must let go of (see `Channel`)."""


def _let_go_in_child() -> None:
    for channel in _held_connection:
        channel.hide_from_children()


def _hide_from_forked_children(channel: Channel) -> None:
    """Make a process forked by a task (`os.fork`, `multiprocessing` with fork) drop the
    worker's connection at once, so the controller notices when the worker itself dies."""
    if not _held_connection:
        os.register_at_fork(after_in_child=_let_go_in_child)
    _held_connection[:] = [channel]


def end_group_members() -> None:
    """Kill whatever a task left running in this worker's process group (when the worker leads
    its group, as local workers do), so nothing a task started outlives the worker."""
    group = os.getpgrp()
    if group != os.getpid():
        return
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == group:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                os.kill(int(entry), signal.SIGKILL)


def run(settings: WorkerSettings) -> int:
    """Run a worker until the controller tells it to exit or goes away; return the exit code.

    Example:
        >>> settings = WorkerSettings("127.0.0.1", 1, "token", "launch", seconds_timeout=0.2)
        >>> run(settings)  # nothing listens on port 1
        3
    """
    if settings.fingerprint is None:
        logger.warning(
            "no BATCHCREW_FINGERPRINT: connecting WITHOUT TLS; a controller that runs with TLS "
            "refuses this worker"
        )
    try:
        channel = _connect(settings)
    except (OSError, ProtocolError) as error:
        print(f"batchcrew worker: {error}", file=sys.stderr)
        return 3
    try:
        serve(channel, settings)
    except (OSError, ProtocolError) as error:
        logger.info("connection ended: %s", error)
    finally:
        channel.close()
        end_group_members()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m batchcrew.worker`: settings come from the environment.

    Example (not run as a test: it dials the controller that the BATCHCREW_* variables name
    and works until told to leave, and it sets up the process's logging):
        >>> main([])  # doctest: +SKIP
        0
    """
    argparse.ArgumentParser(
        prog="batchcrew worker",
        description="Run a batchcrew worker; its settings come from BATCHCREW_* variables.",
    ).parse_args(argv)
    level = os.environ.get("BATCHCREW_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
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
