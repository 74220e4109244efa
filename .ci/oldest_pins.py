"""Print each direct dependency of pyproject.toml pinned to the oldest release its floor (``>=``) admits.

``python .ci/oldest_pins.py pyproject.toml PIP TORCH [EXTRA ...]``: the dependencies, and those of each optional
``EXTRA`` that are not lit-transfer itself. The oldest release is the oldest final version at or above
the floor that ``PIP index versions`` lists (what ``uv --resolution lowest-direct`` would pick); torch is pinned to
``TORCH``, the one CI installs (older torch wheels are not on this machine's index). A dependency without a floor is
an error: every floor the package states is checked by ``.ci/oldest.sh``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import tomllib
from packaging.version import Version

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]+\])?\s*>=\s*([^,;\s]+)")


def oldest_release(pip: str, name: str, floor: str) -> Version:
    """The oldest final release of ``name`` at or above ``floor`` on the configured index."""
    listed = subprocess.run([pip, "index", "versions", name, "--json"], capture_output=True, text=True, check=True)
    versions = sorted(Version(v) for v in json.loads(listed.stdout)["versions"])
    admitted = [v for v in versions if v >= Version(floor) and not v.is_prerelease]
    if not admitted:
        sys.exit(f"no release of {name} at or above {floor}")
    return admitted[0]


def main(pyproject: str, pip: str, torch: str, *extras: str) -> None:
    """Print the pins of ``pyproject``'s dependencies and of its ``extras``' (see the module's docstring)."""
    with open(pyproject, "rb") as file:
        project = tomllib.load(file)["project"]
    dependencies = list(project["dependencies"])
    for extra in extras:
        dependencies += [d for d in project["optional-dependencies"][extra] if not d.startswith("lit-transfer")]
    for dependency in dependencies:
        match = REQUIREMENT.match(dependency)
        if match is None:
            sys.exit(f"pyproject.toml: {dependency!r} states no floor (`>=`)")
        name, extra, floor = match.groups()
        version = torch if name == "torch" else oldest_release(pip, name, floor)
        print(f"{name}{extra or ''}=={version}")


if __name__ == "__main__":
    main(*sys.argv[1:])
