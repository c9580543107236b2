"""containerlab's environment variables in a topology, written as compose interpolation that gives the same text.

containerlab substitutes variables in the topology's text before it reads the YAML, with hellt/envsubst in its
restricted mode (core/file.go: `BytesRestrictedNoReplace(buf, noUnset=false, noEmpty=false, noDigit=true,
noReplace=true)`). compose substitutes them in every value when it reads the compose file. So the importer writes
each value's variables in compose's syntax, so that compose gives each value the text containerlab would have:

| topology            | containerlab (envsubst)                              | compose file         |
| ------------------- | ---------------------------------------------------- | -------------------- |
| `$$`                | `$`                                                  | `$$`                 |
| `$NAME`, `${NAME}`  | its value; unset or empty: `$NAME` as written        | `${NAME:-$$NAME}`    |
| `${NAME:-W}`        | its value; unset or empty: W (`:=` the same)         | `${NAME:-W}`         |
| `${NAME-W}`         | its value; unset: W (`=` the same)                   | `${NAME-W}`          |
| `${NAME+W}`         | set (even empty): W; unset: nothing (`:+` the same)  | `${NAME+W}`          |
| `$1`, `${1}`, a `$` before anything else | itself                          | `$$1`, `$${1}`, `$$` |
| `${` with no `}` on its line | an error: the topology does not load        | refused              |

W is itself text with variables. The one difference left: `${NAME-W}` with NAME set to "" gives compose "" and
containerlab `$NAME` (envsubst's no-replace rule for empty values).
"""

from __future__ import annotations

import re
from typing import Any

from composens.model.errors import ConfigError

_NAME = r"[^\W\d]\w*"  # envsubst's: a letter or '_', then letters, digits and '_'
_TOKEN = re.compile(
    r"\$\$"  # an escaped '$'
    r"|\$\{(?P<name>" + _NAME + r")(?:(?P<op>:-|:=|:\+|-|=|\+)(?P<word>[^}\r\n]*))?\}"  # ${NAME}, ${NAME:-W}...
    r"|\$(?P<bare>" + _NAME + r")"  # $NAME
    r"|\$\{"  # '${' of any other form
    r"|\$"  # any other '$'
)
_OPS = {":-": ":-", ":=": ":-", "-": "-", "=": "-", "+": "+", ":+": "+"}


def escape(value: Any, source: str, path: str = "") -> Any:
    """Rewrite every string in `value` (lists and mappings too, not their keys) for compose; an error names
    `source` and the value's path in the compose document."""
    if isinstance(value, str):
        return _escape_text(value, f"{source}: {path}" if path else source)
    if isinstance(value, list):
        return [escape(v, source, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: escape(v, source, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def _escape_text(text: str, where: str) -> str:
    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$$":
            return "$$"
        name = match.group("name") or match.group("bare")
        if name == "_" and match.group("bare"):
            return "$$_"  # envsubst leaves '$_' as it is
        if name is None:
            if token == "${" and not _closed(text, match.end()):
                raise ConfigError(f"{where}: {text!r}: '${{' without '}}' on its line (containerlab refuses it too)")
            return "$" + token  # literal, as envsubst leaves it
        if not name.isascii():
            return "$" + token  # compose reads ASCII names only; such a variable stays as written
        op = match.group("op")
        if op is None:
            return f"${{{name}:-$${name}}}"
        return f"${{{name}{_OPS[op]}{_escape_text(match.group('word'), where)}}}"

    return _TOKEN.sub(one, text)


def _closed(text: str, start: int) -> bool:
    """Whether a '}' follows on the same line, as envsubst asks of every '${'."""
    end = len(text)
    for stop in ("\n", "\r"):
        found = text.find(stop, start)
        if found != -1:
            end = min(end, found)
    return "}" in text[start:end]
