"""A local AWS Batch: moto's Batch in server mode running jobs as local processes.

For tests and for dry runs before spending money on AWS; needs `pip install 'batchcrew[local]'`.
Importing this package is light: moto, docker-py and boto3 load only when a LocalBatch starts.

Example:
    >>> from batchcrew.localbatch import LocalBatch
    >>> with LocalBatch(job_queue="dry-run-queue") as local:
    ...     local.endpoint_url.startswith("http://127.0.0.1:")
    True
"""

from batchcrew.localbatch.batch import LocalBatch

__all__ = ["LocalBatch"]
