"""A launcher for tests: the whole seam in a few lines.

It starts nothing and keeps each request, so a test can dial in as any worker of a launch and
say, through `statuses`, what `poll` reports about each of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import batchcrew as bc
from batchcrew.launchers.base import LaunchHandle, WorkerKey, WorkerStatus


class RecordingLauncher(bc.Launcher):
    """Starts nothing; records requests, polls and terminations."""

    def __init__(self, levels: int = 1) -> None:
        super().__init__()
        self._levels = levels
        self.requests: list[bc.LaunchRequest] = []
        self.statuses: dict[WorkerKey, WorkerStatus] = {}
        self.polls: list[dict[str, list[int]]] = []
        self.terminated: list[tuple[str, Sequence[int] | None]] = []

    @property
    def levels(self) -> int:
        return self._levels

    def launch(self, request: bc.LaunchRequest) -> LaunchHandle:
        self.requests.append(request)
        return LaunchHandle(request.launch, request.count, f"job-{request.launch}")

    def poll(self, workers: Mapping[LaunchHandle, Sequence[int]]) -> dict[WorkerKey, WorkerStatus]:
        self.polls.append({handle.launch: list(indices) for handle, indices in workers.items()})
        return {
            (handle.launch, index): self.statuses[(handle.launch, index)]
            for handle, indices in workers.items()
            for index in indices
            if (handle.launch, index) in self.statuses
        }

    def terminate(self, handle: LaunchHandle, indices: Sequence[int] | None = None) -> None:
        self.terminated.append((handle.launch, indices))
