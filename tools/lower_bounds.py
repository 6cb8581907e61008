"""Print a pip constraints file pinning each runtime dependency to its declared `>=` floor.

    python tools/lower_bounds.py > floors.txt
    pip install -c floors.txt -e '.[test]'

CI runs the suite that way too (.ci/run), so a floor in pyproject.toml is one that works.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# name[extras] ... >=version ... ; marker
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def floors(pyproject: Path = PYPROJECT) -> list[tuple[str, str]]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    pins = []
    for requirement in dependencies:
        match = REQUIREMENT.match(requirement)
        if match is None:
            sys.exit(f"lower_bounds: cannot read requirement {requirement!r}")
        name, specifiers = match.groups()
        floor = re.search(r">=\s*([^,\s]+)", specifiers)
        if floor is None:
            sys.exit(f"lower_bounds: {name} has no >= floor in {pyproject.name}")
        pins.append((name, floor.group(1)))
    return pins


def main() -> None:
    for name, version in floors():
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
