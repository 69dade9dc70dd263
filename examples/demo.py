"""batchcrew demo: 200 small simulations on 4 auto-scaled local workers, over TLS.

Each task estimates the mean of a skewed distribution by bootstrap; seeds derive from the
controller's seed, so the numbers are the same on every run and with any number of workers.
"""

from __future__ import annotations

import random
import statistics
import time

from rich.console import Console
from rich.table import Table

import batchcrew as bc


def bootstrap_mean(replicate: int, draws: int = 2_000) -> dict[str, float]:
    """One simulated study: draw a skewed sample, bootstrap the mean's standard error."""
    sample = [random.expovariate(1.0) for _ in range(draws)]
    means = [statistics.fmean(random.choices(sample, k=draws)) for _ in range(20)]
    return {
        "replicate": replicate,
        "mean": statistics.fmean(sample),
        "standard_error": statistics.stdev(means),
    }


def run(crew: bc.Controller) -> None:
    """Run the 200 simulations on `crew` and print what came back and who ran it."""
    console = Console()
    started = time.perf_counter()
    with crew:
        results = crew.map(bootstrap_mean, range(200))
        seconds = time.perf_counter() - started
        summary = crew.summary()

    table = Table(title=f"First 8 of {len(results)} results ({seconds:.1f} s in all)")
    for column in ("task", "status", "mean", "std. error", "worker"):
        table.add_column(column, no_wrap=column == "worker")
    for result in results[:8]:
        value = result.value
        table.add_row(
            result.name,
            result.status,
            f"{value['mean']:.4f}",
            f"{value['standard_error']:.4f}",
            str(result.worker),
        )
    console.print(table)

    means = [result.value["mean"] for result in results]
    console.print(
        f"Mean of the 200 estimates: {statistics.fmean(means):.4f} (true value 1.0); "
        f"all succeeded: {all(result.ok for result in results)}"
    )

    workers = Table(title="Workers")
    for column in ("worker", "status", "tasks", "seconds busy", "errors", "crashes"):
        workers.add_column(column, no_wrap=column == "worker")
    for row in summary.itertuples():
        workers.add_row(
            row.worker,
            row.status,
            str(row.tasks),
            f"{row.seconds_busy:.2f}",
            str(row.errors),
            str(row.crashes),
        )
    console.print(workers)


def main() -> None:
    run(bc.Controller(workers=4, seconds_idle=10, seed=2024))


if __name__ == "__main__":
    main()
