"""The Python blocks of the README and of docs/*.md run, in order, as a reader would run them.

The blocks of one document share one namespace. Those that call AWS reach the session's
LocalBatch through the variables `batchcrew local-batch` prints (its endpoint, region and fake
keys), with the job queues and the AWS profile the documents name. A block that cannot run here
is marked in the markdown by `<!-- not run: <reason> -->` on the line before it; those are
counted, so that they stay few.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchcrew.localbatch import LocalBatch

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DOCUMENTS = [
    document
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    if BLOCK.search(document.read_text())
]
"""The documents with Python in them (the README, the guides; not, say, the architecture)."""
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>[^>]+?) -->\s*$")
NOT_RUN_MAX = 3
"""The most blocks, over all documents, that may be marked as not run."""
QUEUES_NAMED = ("my-queue", "queue-a", "queue-b")
"""Job queues the documents use, made on the LocalBatch beside its own."""
PROFILE_NAMED = "[profile research]\nregion = us-east-1\n"


@dataclass(frozen=True)
class Block:
    """One ```python block: where it starts, its code, and why it is not run (if it is not)."""

    line: int
    code: str
    not_run: str | None


def python_blocks(document: Path) -> list[Block]:
    text = document.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rpartition("\n")[2]
        marked = NOT_RUN.search(before)
        blocks.append(
            Block(
                line=text.count("\n", 0, match.start()) + 2,
                code=match.group(1),
                not_run=marked.group("reason") if marked else None,
            )
        )
    return blocks


@pytest.fixture
def aws_as_printed_by_local_batch(
    local_batch: LocalBatch, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> LocalBatch:
    """The environment of a shell where the user pasted `batchcrew local-batch`'s exports."""
    for name, value in local_batch.environment_variables().items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "aws-config"
    config.write_text(PROFILE_NAMED)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    batch: Any = boto3.client("batch", **local_batch.client_kwargs())  # type: ignore[call-overload]
    for queue in QUEUES_NAMED:
        batch.create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[
                {"order": 1, "computeEnvironment": local_batch.compute_environment}
            ],
        )
    return local_batch


@pytest.mark.parametrize("document", DOCUMENTS, ids=[path.name for path in DOCUMENTS])
def test_the_python_blocks_of_a_document_run(
    document: Path, aws_as_printed_by_local_batch: LocalBatch
) -> None:
    blocks = python_blocks(document)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in blocks:
        if block.not_run is None:
            exec(compile(block.code, f"{document.name}:{block.line}", "exec"), namespace)


def test_few_blocks_are_not_run_and_each_says_why() -> None:
    not_run = [
        (document.name, block.line, block.not_run)
        for document in DOCUMENTS
        for block in python_blocks(document)
        if block.not_run is not None
    ]
    assert len(not_run) <= NOT_RUN_MAX, not_run
    assert all(reason and reason.strip() for _, _, reason in not_run)


def test_a_block_marked_not_run_is_found_with_its_reason(tmp_path: Path) -> None:
    document = tmp_path / "guide.md"
    document.write_text(
        "Intro.\n\n```python\nx = 1\n```\n\n<!-- not run: needs a real AWS account -->\n"
        "```python\nraise SystemExit\n```\n"
    )
    assert python_blocks(document) == [
        Block(line=4, code="x = 1\n", not_run=None),
        Block(line=9, code="raise SystemExit\n", not_run="needs a real AWS account"),
    ]


def test_the_readme_and_the_guides_have_python_that_runs() -> None:
    assert {document.name for document in DOCUMENTS} >= {"README.md", "aws.md", "local-batch.md"}


SKIPPED_EXAMPLES_MAX = 5
"""The most docstring examples that may be marked to skip (entry points that serve until
stopped, or that would change the test process)."""
SKIPPED_LINE = re.compile(r">>> .*# doctest: \+SKIP")


def test_few_docstring_examples_are_skipped_and_each_says_why() -> None:
    skipped: list[tuple[str, str]] = []
    for path in sorted((ROOT / "src" / "batchcrew").rglob("*.py")):
        for docstring in _docstrings(path):
            if SKIPPED_LINE.search(docstring):
                example = docstring[docstring.find("Example") :]
                skipped.append((path.name, example.partition("\n")[0]))
    assert len(skipped) <= SKIPPED_EXAMPLES_MAX, skipped
    for name, heading in skipped:
        assert "(not run as a test:" in heading, f"{name}: {heading!r} gives no reason"


def _docstrings(path: Path) -> list[str]:
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, documented)]
    return [text for text in (ast.get_docstring(node, clean=False) for node in nodes) if text]
