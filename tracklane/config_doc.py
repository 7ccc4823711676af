"""docs/configuration.md, generated from the settings' field docstrings.

    python -m tracklane.config_doc > docs/configuration.md

Each ``Settings`` field's docstring says what it means and ends with ``Default: ...``, how
the default reads (``<data dir>/spool`` says more than ``None``). A test keeps the file
current.
"""

from __future__ import annotations

import re

from tracklane.settings import Settings

_HEADER = """\
# Configuration

Every setting is an environment variable with the `TRACKLANE_` prefix; command-line flags
override them. This file is generated from `tracklane/settings.py`
(`python -m tracklane.config_doc > docs/configuration.md`).

| Variable | Default | Meaning |
|---|---|---|
"""
_DEFAULT = re.compile(r"\s*Default: (?P<default>.+?)\.?$", re.S)


def render() -> str:
    rows = []
    for name, field in Settings.model_fields.items():
        text = " ".join((field.description or "").split())
        found = _DEFAULT.search(text)
        if not text or found is None:
            raise ValueError(f"settings field {name!r}: no docstring ending with its Default")
        meaning = text[:found.start()].rstrip(".")
        rows.append(f"| `TRACKLANE_{name.upper()}` | {found['default']} | {meaning} |\n")
    return _HEADER + "".join(rows)


if __name__ == "__main__":
    print(render(), end="")
