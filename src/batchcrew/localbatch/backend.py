"""The child process of `LocalBatch`: moto's server and the local engine, living and dying together.

Owns their start-up order (engine first, then moto with `DOCKER_HOST` pointing at it and the
corrections that make moto's Batch answer as AWS does), the one line that announces their ports,
and the shutdown that kills every job. It sets process-wide environment variables and patches moto,
which is why it runs in a process of its own and is never imported by library code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from batchcrew.localbatch.corrections import install as install_corrections
from batchcrew.localbatch.engine import LOOPBACK, Engine
from batchcrew.localbatch.motojobs import MotoJobs

logger = logging.getLogger("batchcrew.localbatch.backend")


def _watch_parent(stopping: threading.Event, parent_gone: threading.Event) -> None:
    # The parent holds our stdin open and never writes; end of file means it has gone.
    while os.read(sys.stdin.fileno(), 4096):
        pass
    logger.warning("the parent process has gone; stopping")
    parent_gone.set()
    stopping.set()


def _import_backends() -> None:
    # moto imports a service's code on its first request, and EC2's takes about a second;
    # importing IAM's and Logs' now overlaps that with the parent making its clients (Batch's,
    # with EC2's, is imported by the corrections before the ports are announced).
    try:
        import moto.iam.models
        import moto.logs.models  # noqa: F401
    except ImportError:
        logger.exception("could not import moto's IAM or Logs backend")


def main(argv: list[str] | None = None) -> int:
    """Serve moto and the engine until SIGTERM, SIGINT or the end of stdin, then kill every job.

    Prints one JSON line, `{"engine_port": ..., "moto_port": ...}`, once both listen; after it,
    anything written to stdout goes to stderr. moto's server ends with the process.

    Example (not run as a test: it serves until SIGTERM):
        >>> main(["--workdir", "."])  # doctest: +SKIP
        {"engine_port": 41234, "moto_port": 41235}
    """
    parser = argparse.ArgumentParser(prog="python -m batchcrew.localbatch.backend")
    parser.add_argument("--workdir", default=None, help="directory the jobs run in")
    parser.add_argument("--log-level", default="WARNING", help="logging level")
    parser.add_argument(
        "--parent-directory",
        default=None,
        help="the parent's temporary directory, removed here if the parent dies first",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        level=arguments.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # moto's request log would otherwise print a line per API call.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    stopping = threading.Event()
    parent_gone = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda number, frame: stopping.set())
    threading.Thread(target=_watch_parent, args=(stopping, parent_gone), daemon=True).start()

    engine = Engine(workdir=arguments.workdir, jobs=MotoJobs()).start()
    # Batch's backend takes about a second to import: patch it while moto's server starts, and
    # before any request can reach it.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corrections")
    corrections = pool.submit(install_corrections)
    pool.shutdown(wait=False)
    try:
        # moto's job threads each build a docker client with docker.from_env() at run time.
        os.environ["DOCKER_HOST"] = engine.docker_host
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        moto = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
        moto.start()
        moto_port = moto.get_host_and_port()[1]
        corrections.result()  # a failure to patch stops the start
        # moto tells each job where it is through MOTO_PORT (in the job's environment).
        os.environ["MOTO_PORT"] = str(moto_port)
        print(json.dumps({"engine_port": engine.port, "moto_port": moto_port}), flush=True)
        # Nobody reads stdout any more, and moto prints warnings there.
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        logger.info("moto on port %d, engine on %s", moto_port, engine.docker_host)
        _import_backends()
        stopping.wait()
        logger.info("stopping")
    finally:
        engine.close()
    logger.info("every job process is killed; exiting")
    if parent_gone.is_set() and arguments.parent_directory:
        shutil.rmtree(arguments.parent_directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    status = main()
    # moto keeps nothing worth a clean shutdown, and tearing down its thousands of modules
    # takes longer than the rest of the stop; leave at once.
    logging.shutdown()
    os._exit(status)
