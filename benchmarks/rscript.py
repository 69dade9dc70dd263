"""Running the R peers: `Rscript systems/peers.R` with the R packages `make bench` installs.

Only the R peers' drivers use this; without `Rscript` they report themselves missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
R_LIBRARY = BENCHMARKS.parent / ".bench" / "R"
SCRIPT = BENCHMARKS / "systems" / "peers.R"


@dataclass(frozen=True)
class RPackage:
    """An R peer's driver functions, for its module to export.

    Example:
        >>> RPackage("mirai").missing() is None or "not" in RPackage("mirai").missing()
        True
    """

    package: str

    def missing(self) -> str | None:
        """Why the package cannot run here (no R, or not installed), or None."""
        if shutil.which("Rscript") is None:
            return "Rscript not found (R is not installed)"
        check = f"quit(status = !requireNamespace('{self.package}', quietly = TRUE))"
        if _rscript(["-e", check]).returncode != 0:
            return f"the R package {self.package} is not installed (make bench puts it in .bench/R)"
        return None

    def version(self) -> str:
        """The package's version."""
        return _rscript(["-e", f"cat(format(packageVersion('{self.package}')))"]).stdout.strip()

    def run(self, key: str, size: Mapping[str, float]) -> float:
        """Take one measure once with `peers.R`; it prints the value on its last line."""
        pairs = [f"{name}={value:g}" for name, value in size.items()]
        completed = _rscript([str(SCRIPT), self.package, key, *pairs])
        if completed.returncode != 0:
            raise RuntimeError(f"peers.R failed: {completed.stderr.strip()[-500:]}")
        return float(completed.stdout.split()[-1])


def _rscript(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    library = os.pathsep.join(filter(None, [str(R_LIBRARY), os.environ.get("R_LIBS_USER")]))
    return subprocess.run(
        ["Rscript", *arguments],
        env={**os.environ, "R_LIBS_USER": library},
        capture_output=True,
        text=True,
        check=False,
    )
