"""Helpers shared by the tests: processes by pid, the local engine as a process, Batch jobs."""
