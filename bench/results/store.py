"""Run results on disk: one JSON file per run, validated against the published schema."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import jsonschema

from bench.errors import UserError
from bench.results.model import SCHEMA_VERSION, to_builtins

__all__ = ["SCHEMA_VERSION", "read_result", "schema", "validate", "write_result"]
SCHEMA_PATH = Path(__file__).parent / "result.schema.json"


def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return data


def validate(result: dict[str, Any]) -> list[str]:
    """Schema violations of a result, as readable strings (empty when valid)."""
    validator = jsonschema.Draft202012Validator(schema())
    return [
        f"{'.'.join(str(p) for p in e.path) or '(top level)'}: {e.message}"
        for e in validator.iter_errors(result)
    ]


def write_result(path: Path, result: Any) -> Path:
    """Write a result (typed or plain data) atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # mkstemp creates 0600; a result is an ordinary, shareable file.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(to_builtins(result), fh, indent=1, sort_keys=False)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"result file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a JSON result file: {exc}") from exc
    problems = validate(data)
    if problems:
        raise UserError(f"{path} does not match the result schema: {problems[0]}")
    return data
