"""A local AWS Batch: moto's Batch in server mode running jobs as local processes."""
