"""Write (or check) the spec's JSON Schema that ships beside the specs: search_spaces/ganops.schema.json.

python -m search_spaces.schema          # rewrite it after changing a field of the spec
python -m search_spaces.schema --check  # exit 1 if it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from search_spaces.spec import json_schema

SCHEMA_FILE = Path(__file__).with_name("ganops.schema.json")
REGENERATE = "python -m search_spaces.schema"


def render() -> str:
    """The schema file's text: stable key order, so a diff shows what changed."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        if not SCHEMA_FILE.is_file() or SCHEMA_FILE.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE} is stale; regenerate it with `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
