"""Print a short key for the dependency set; the venv is updated when it changes."""

import hashlib
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
material = repr((project["dependencies"], project.get("optional-dependencies", {})))
print(hashlib.sha256(material.encode()).hexdigest()[:12])
