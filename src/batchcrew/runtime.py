"""The controller's event-loop thread: starting it, running code on it, stopping it.

Owns the loop and its thread and nothing else; what runs there (the server, the dispatcher)
belongs to others. Any thread may hand it work; work handed from the loop thread itself runs at
once, so a future's done-callback that calls the controller cannot deadlock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from batchcrew.errors import TerminatedError

logger = logging.getLogger("batchcrew.runtime")

T = TypeVar("T")


class Runtime:
    """One event loop on one daemon thread.

    Example:
        >>> runtime = Runtime("example")
        >>> async def setup() -> None: pass
        >>> runtime.start(setup)
        >>> runtime.call(lambda: 6 * 7)
        42
        >>> runtime.stop()
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None

    def start(self, setup: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start the thread and run `setup()` on the loop; its error is raised here."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.thread = threading.Thread(
            target=self._run, args=(setup, started), name=f"batchcrew-{self.name}", daemon=True
        )
        self.thread.start()
        try:
            started.result()
        except BaseException:
            self.thread.join()
            self.loop.close()
            raise

    def _run(
        self,
        setup: Callable[[], Coroutine[Any, Any, None]],
        started: concurrent.futures.Future[None],
    ) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(setup())
        except BaseException as error:  # noqa: BLE001 (raised again in the starting thread)
            started.set_exception(error)
            return
        started.set_result(None)
        self.loop.run_forever()
        self.loop.close()

    @property
    def on_loop(self) -> bool:
        """True when called from the loop's own thread."""
        return self.thread is not None and threading.get_ident() == self.thread.ident

    def post(self, function: Callable[..., object], *args: object) -> bool:
        """Run `function(*args)` on the loop soon, from any thread; False once it has stopped."""
        try:
            self.loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def call(self, function: Callable[[], T]) -> T:
        """Run `function()` on the loop and return its value (at once on the loop thread)."""
        if self.on_loop:
            return function()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(function())
            except BaseException as error:  # noqa: BLE001 (raised again in the caller)
                done.set_exception(error)

        if not self.post(run):
            raise TerminatedError(f"controller {self.name} was terminated")
        thread = self.thread
        while True:
            try:
                return done.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if thread is None or not thread.is_alive():
                    raise TerminatedError(f"controller {self.name} was terminated") from None

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run a coroutine on the loop and wait for it (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout)

    def stop(self) -> None:
        """Stop the loop and join its thread (idempotent)."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        if self.thread is not None:
            self.thread.join(timeout=10)
