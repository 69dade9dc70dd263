"""AWS Batch support: configuration, job definitions, the monitor and (later) the launcher."""
