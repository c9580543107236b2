"""containerlab topology files: read as containerlab reads them, written as YAML with comments at the head."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Converted:
    """A converted document, what was not carried (one line each), and comments for the file's head."""

    document: dict[str, Any]
    warnings: tuple[str, ...] = ()
    comments: tuple[str, ...] = ()


def load(text: str) -> Any:
    """Read a topology as containerlab does: YAML 1.2 booleans only (`yes`, `on`, `no` and `off` are strings)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    bool_tag = "tag:yaml.org,2002:bool"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    return yaml.load(text, Loader=Loader)


def one_line(text: str) -> str:
    """Text as one line: every character that is not printable (a newline, a YAML line break such as U+2028, a
    control character) written as its Python escape, so a name from a file cannot start a line of its own."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def dump(converted: Converted, *, header: str) -> str:
    """Write a converted document as YAML: its comments first (each one line: names in them come from files),
    short lists of scalars on one line."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
        scalars = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in data)
        flow = scalars and len(data) <= 4 and sum(len(str(v)) + 2 for v in data) <= 72  # fits on its line
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, represent_list)
    lines = [f"# {one_line(header)}", *(f"# {one_line(c)}" for c in converted.comments)]
    body = yaml.dump(converted.document, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120)
    return "\n".join(lines) + "\n" + body
