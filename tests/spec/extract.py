"""Extract the Responses API schemas the conformance test needs from OpenAI's OpenAPI file.

Usage: python tests/spec/extract.py path/to/openapi.json > tests/spec/responses.json

It keeps the schemas reachable from `ROOTS` (every `$ref` followed), rewrites their
`$ref`s to `#/$defs/...` so that the result is one self-contained JSON Schema (2020-12,
which OpenAPI 3.1 uses), and drops what validation does not read (descriptions,
examples, `x-` vendor keys, and the 2019-09 `$recursiveAnchor`) to keep the file small
enough to commit and valid as 2020-12.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ROOTS = ("Response", "ResponseStreamEvent", "ErrorResponse", "ResponseItemList")
# `$recursiveAnchor` is draft 2019-09 (one schema, CompoundFilter, has it): a 2020-12
# validator ignores it and its metaschema rejects its boolean value.
_DROPPED = {"description", "example", "examples", "title", "deprecated", "$recursiveAnchor"}
_PREFIX = "#/components/schemas/"


def _clean(node: Any, refs: set[str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROPPED or key.startswith("x-"):
                continue
            if key == "$ref" and isinstance(value, str) and value.startswith(_PREFIX):
                name = value[len(_PREFIX) :]
                refs.add(name)
                out[key] = f"#/$defs/{name}"
            elif key == "properties" and isinstance(value, dict):
                # property names are data, not keywords: keep them all
                out[key] = {name: _clean(prop, refs) for name, prop in value.items()}
            else:
                out[key] = _clean(value, refs)
        return out
    if isinstance(node, list):
        return [_clean(item, refs) for item in node]
    return node


def extract(spec: dict[str, Any]) -> dict[str, Any]:
    """The self-contained schema document for `ROOTS`."""
    schemas = spec["components"]["schemas"]
    defs: dict[str, Any] = {}
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in defs:
            continue
        refs: set[str] = set()
        defs[name] = _clean(schemas[name], refs)
        todo.extend(sorted(refs - defs.keys()))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "Extracted by tests/spec/extract.py from openai/openai-openapi openapi.json; see README.md.",
        "info": {"openapi": spec["openapi"], "version": spec["info"]["version"]},
        "$defs": dict(sorted(defs.items())),
    }


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    json.dump(extract(spec), sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
