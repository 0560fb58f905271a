"""docs/configuration.md, generated from the settings object so that the two cannot drift apart.

``python -m imagequeue.configdoc`` prints it; ``--write`` rewrites the file. A test fails when the
file in the repository is not what this prints.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from imagequeue.settings import Settings

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

# Sections in the order they are printed: (title, field-name prefixes). The first match wins; a
# setting no prefix matches lands in "Other".
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Where things live", ("database_url", "database_pool", "database_max", "redis_", "broker_",
                           "blob_", "image_dir", "catalogue_", "public_base_url")),
    ("Workers", ("worker_", "lease_", "database_retry", "database_backoff", "vendor_", "park_",
                 "job_deadline", "verify_")),
    ("Dispatch and scheduling", ("dispatch_", "snapshot_", "reconcile_", "stream_")),
    ("The breaker", ("breaker_",)),
    ("Validation of jobs and batches", ("max_", "batch_")),
    ("Tenants", ("tenant_",)),
    ("The OpenAI-compatible gateway", ("gateway_",)),
    ("Webhooks", ("webhook_",)),
    ("The API, the status page and metrics", ("api_", "status_", "metrics_", "scheduler_",
                                              "admin_", "retry_after", "ready_")),
)

HEADER = """\
# Configuration reference

Every setting is an environment variable with the `IMGQ_` prefix, read once when a process starts
(`imagequeue/settings.py`; this file is generated from it by `python -m imagequeue.configdoc
--write`, and a test fails when the two disagree). Lists are JSON (`["10.0.0.0/8"]`); booleans are
`true`/`false`. A value that does not parse stops the process at start-up with the setting's name.

Settings that **must agree on every host** of one deployment: `IMGQ_DATABASE_URL`, `IMGQ_REDIS_URL`,
`IMGQ_BROKER_URL`, `IMGQ_BLOB_URL` (or a shared `IMGQ_IMAGE_DIR`), `IMGQ_CATALOGUE_PATH`'s contents,
the `IMGQ_BREAKER_*` settings, `IMGQ_LEASE_S` and `IMGQ_WORKER_HEARTBEAT_S`, and
`IMGQ_GATEWAY_URL_SECRET` on every API process.

Other variables read, not prefixed: the vendors' keys (`GEMINI_API_KEY`, `OPENAI_API_KEY`,
`BFL_API_KEY`, `ARK_API_KEY`, `RECRAFT_API_TOKEN`; `imgq models` shows which are missing) and, for an
S3 blob store, the usual AWS variables (`AWS_ENDPOINT_URL`, `AWS_REGION` or `AWS_DEFAULT_REGION`,
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        optional = type(None) in args
        return " \\| ".join(names) + (" (optional)" if optional else "")
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    name = getattr(annotation, "__name__", str(annotation))
    return {"str": "text", "SecretStr": "secret text", "Path": "path", "float": "number",
            "int": "integer", "bool": "boolean"}.get(name, name)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return f" ({', '.join(parts)})" if parts else ""


def _section(name: str) -> str:
    for title, prefixes in SECTIONS:
        if name.startswith(prefixes):
            return title
    return "Other"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    grouped: dict[str, list[str]] = {title: [] for title, _ in SECTIONS}
    grouped["Other"] = []
    for name, info in Settings.model_fields.items():
        row = (f"| `IMGQ_{name.upper()}` | {_type_name(info.annotation)}{_bounds(info)} | "
               f"{_default(info)} | {_cell(info.description or '')} |")
        grouped[_section(name)].append(row)
    lines = [HEADER]
    for title, rows in grouped.items():
        if not rows:
            continue
        lines += [f"## {title}", "", "| variable | type | default | what |", "|---|---|---|---|",
                  *rows, ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if "--write" in argv:
        DOC_PATH.write_text(text, encoding="utf-8")
        print(f"wrote {DOC_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
