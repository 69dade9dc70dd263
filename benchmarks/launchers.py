"""The benchmarks' batchcrew launchers: the only code here that depends on the Launcher seam.

`IdleLauncher` starts nothing (tasks stay queued, for the memory measure); `SwarmLauncher`
asks a swarm of simulated workers to dial in instead of starting processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import batchcrew as bc


class IdleLauncher(bc.Launcher):
    """Launches nothing, so every pushed task stays queued."""

    def launch(self, request: bc.LaunchRequest) -> str:
        return request.launch

    def terminate(self, handle: str, indices: Sequence[int] | None = None) -> None:
        return None

    def poll(self, handle: str) -> dict[int, str]:
        return {}


class SwarmLauncher(bc.Launcher):
    """Each launch becomes `open(environment, count)`: the swarm opens `count` connections
    that present the launch's environment (host, port, token, launch id, fingerprint).

    The simulated workers never end by themselves, so `poll` reports nothing; `terminate`
    is left to the swarm, which closes every connection when the benchmark ends.
    """

    def __init__(self, open_connections: Callable[[Mapping[str, str], int], None]) -> None:
        super().__init__()
        self.open_connections = open_connections

    def launch(self, request: bc.LaunchRequest) -> str:
        self.open_connections(request.environment, request.count)
        return request.launch

    def terminate(self, handle: str, indices: Sequence[int] | None = None) -> None:
        return None

    def poll(self, handle: str) -> dict[int, str]:
        return {}
