"""Print a short key for the dependency set, so a venv outside the clone is reused until it changes."""

import hashlib
import sys
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
material = repr((sys.version_info[:2], project["dependencies"], project.get("optional-dependencies", {})))
print(hashlib.sha256(material.encode()).hexdigest()[:12])
