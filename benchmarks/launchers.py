"""The benchmarks' batchcrew launchers: the only code here that depends on the Launcher seam.

`IdleLauncher` starts nothing (tasks stay queued, for the memory measure); `SwarmLauncher`
asks a swarm of simulated workers to dial in instead of starting processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import batchcrew as bc


class IdleLauncher(bc.Launcher):
    """Launches nothing, so every pushed task stays queued."""

    def launch(self, request: bc.LaunchRequest) -> bc.LaunchHandle:
        return bc.LaunchHandle(request.launch, request.count, request.launch)

    def poll(
        self, workers: Mapping[bc.LaunchHandle, Sequence[int]]
    ) -> dict[tuple[str, int], bc.WorkerStatus]:
        return {}  # nobody is ever there: no news

    def terminate(self, handle: bc.LaunchHandle, indices: Sequence[int] | None = None) -> None:
        return None


class SwarmLauncher(bc.Launcher):
    """Each launch becomes `open(environment, count)`: the swarm opens `count` connections
    that present the launch's environment (host, port, token, launch id, fingerprint).

    The simulated workers never end by themselves, so `poll` reports them running;
    `terminate` is left to the swarm, which closes every connection when the benchmark ends.
    """

    def __init__(self, open_connections: Callable[[Mapping[str, str], int], None]) -> None:
        super().__init__()
        self.open_connections = open_connections

    def launch(self, request: bc.LaunchRequest) -> bc.LaunchHandle:
        self.open_connections(request.environment, request.count)
        return bc.LaunchHandle(request.launch, request.count, request.launch)

    def poll(
        self, workers: Mapping[bc.LaunchHandle, Sequence[int]]
    ) -> dict[tuple[str, int], bc.WorkerStatus]:
        return {
            (handle.launch, index): bc.WorkerStatus("running")
            for handle, indices in workers.items()
            for index in indices
        }

    def terminate(self, handle: bc.LaunchHandle, indices: Sequence[int] | None = None) -> None:
        return None
