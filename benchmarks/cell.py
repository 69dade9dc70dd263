"""One repetition of one measure of one system, in a fresh interpreter (the system's own).

`python cell.py SYSTEM check` prints what the suite needs to know before it starts (missing,
version, label); `python cell.py SYSTEM MEASURE SIZE` prints the measured value. Both print one
JSON line on stdout; anything else goes to stderr.
"""

from __future__ import annotations

import json
import sys

import systems


def main(argv: list[str]) -> int:
    """Run one cell, or the check of one system; print the JSON answer."""
    name, what = argv[0], argv[1]
    driver = systems.load(name)
    if what == "check":
        reason = driver.missing()
        answer = {"missing": reason, "version": None if reason else driver.version()}
    else:
        driver.version()  # imports the system: no clock counts the import
        answer = {"value": driver.run(what, json.loads(argv[2]))}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
