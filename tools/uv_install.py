"""Print pip's own package-source settings as uv options (used by the Makefile's install).

uv reads no pip configuration, so a machine whose wheels come from a local folder, a mirror or a constraints
file set in ``pip.conf`` or ``PIP_*`` variables would resolve differently under uv than under pip. This reads
``pip config list`` (files and environment alike) and prints the same settings as ``uv pip install`` options:
find-links, index-url, extra-index-url, no-index and constraint. A pip certificate bundle becomes
``SSL_CERT_FILE=...`` on a line of its own (an environment variable for uv, not an option).

Usage: ``python tools/uv_args.py`` (with the venv's python, whose pip is asked).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

OPTIONS = {  # pip key -> uv option; each value may hold several whitespace-separated entries
    "find-links": "--find-links",
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "constraint": "--constraint",
}
LINE = re.compile(r"^(?P<section>[^.]*)\.(?P<key>[a-z-]+)=(?P<value>.*)$")


def pip_settings(listing: str) -> dict[str, list[str]]:
    """``{key: [values]}`` from the lines of ``pip config list`` (``global.find-links='/opt/wheels'``)."""
    settings: dict[str, list[str]] = {}
    for line in listing.splitlines():
        match = LINE.match(line.strip())
        if not match or match["section"] not in ("global", "install", ":env:"):
            continue
        value = match["value"]
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        for item in value.split():
            if item not in settings.setdefault(match["key"], []):
                settings[match["key"]].append(item)
    return settings


def uv_args(settings: dict[str, list[str]]) -> tuple[list[str], dict[str, str]]:
    """uv options and environment variables carrying the same settings."""
    args: list[str] = []
    for key, option in OPTIONS.items():
        for value in settings.get(key, []):
            args += [option, value]
    if any(v.lower() in ("1", "true", "yes", "on") for v in settings.get("no-index", [])):
        args.append("--no-index")
    env = {"SSL_CERT_FILE": settings["cert"][-1]} if settings.get("cert") else {}
    return args, env


def main(argv: list[str]) -> int:
    bindir = os.path.dirname(sys.executable)
    uv = shutil.which("uv", path=bindir) or shutil.which("uv")
    if uv is None:
        print("uv_install: uv is not installed (pip install uv)", file=sys.stderr)
        return 127
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=False).stdout
    args, env = uv_args(pip_settings(listing))
    command = [uv, "pip", "install", "--python", sys.executable, "--index-strategy", "unsafe-best-match", *args,
               *argv]
    return subprocess.run(command, env={**os.environ, **env}, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
