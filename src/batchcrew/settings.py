"""The controller's settings: checked once, at construction, then read-only.

Owns the argument checks (messages name the argument and what it allows) and the derived
values (the controller's seed, its TLS material). It starts nothing and opens nothing.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from batchcrew.seeds import controller_seed
from batchcrew.tls import TLS


def check_seconds(name: str, value: Any, *, none: bool = False, zero: bool = False) -> None:
    """Raise unless `value` is a number of seconds (> 0, or >= 0 with `zero`; None with `none`).

    Example:
        >>> check_seconds("seconds_idle", -1)
        Traceback (most recent call last):
        ...
        ValueError: seconds_idle must be a number > 0, not -1
    """
    if value is None and none:
        return
    allowed = "a number" + (" >= 0" if zero else " > 0") + (" or None" if none else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {allowed}, not {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{name} must be {allowed}, not {value!r}")


def check_count(name: str, value: Any, *, minimum: int, none: bool = False) -> None:
    """Raise unless `value` is an integer >= `minimum` (or None with `none`).

    Example:
        >>> check_count("workers", 0, minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: workers must be an integer >= 1, not 0
    """
    if value is None and none:
        return
    allowed = f"an integer >= {minimum}" + (" or None" if none else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {allowed}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed}, not {value!r}")


@dataclass(frozen=True)
class Settings:
    """A controller's settings, checked. `seed` is the controller's seed (drawn when not given).

    Example:
        >>> settings = Settings.checked(workers=2, host="127.0.0.1", tls=None, seed=1)
        >>> settings.workers, settings.seed, settings.name.startswith("crew-")
        (2, 1, True)
    """

    name: str
    workers: int
    host: str
    port: int
    tls: TLS | None
    seconds_idle: float
    seconds_launch: float
    seconds_wall: float | None
    seconds_interval: float
    tasks_max: int | None
    crashes_max: int
    seed: int

    @classmethod
    def checked(
        cls,
        *,
        name: str | None = None,
        workers: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: TLS | Literal["automatic"] | None = "automatic",
        seconds_idle: float = 300.0,
        seconds_launch: float = 30.0,
        seconds_wall: float | None = None,
        seconds_interval: float = 0.25,
        tasks_max: int | None = None,
        crashes_max: int = 5,
        seed: int | None = None,
    ) -> Settings:
        """Check every argument; raise `TypeError`/`ValueError` naming the first bad one."""
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError("name must be a non-empty string or None")
        check_count("workers", workers, minimum=1)
        if not isinstance(host, str) or not host:
            raise ValueError("host must be a non-empty address string or None")
        check_count("port", port, minimum=0)
        if port > 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, not {port}")
        if not (tls is None or tls == "automatic" or isinstance(tls, TLS)):
            raise ValueError("tls must be 'automatic', a batchcrew.TLS object, or None")
        check_seconds("seconds_idle", seconds_idle)
        check_seconds("seconds_launch", seconds_launch)
        check_seconds("seconds_wall", seconds_wall, none=True)
        check_seconds("seconds_interval", seconds_interval)
        check_count("tasks_max", tasks_max, minimum=1, none=True)
        check_count("crashes_max", crashes_max, minimum=1)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an integer or None, not {type(seed).__name__}")
        if seed is not None and not -(2**127) <= seed < 2**127:
            raise ValueError("seed must be an integer from -2**127 to 2**127 - 1")
        return cls(
            name=name or f"crew-{secrets.token_hex(3)}",
            workers=workers,
            host=host,
            port=port,
            tls=TLS.automatic() if tls == "automatic" else tls,
            seconds_idle=float(seconds_idle),
            seconds_launch=float(seconds_launch),
            seconds_wall=None if seconds_wall is None else float(seconds_wall),
            seconds_interval=float(seconds_interval),
            tasks_max=tasks_max,
            crashes_max=crashes_max,
            seed=controller_seed(seed),
        )
