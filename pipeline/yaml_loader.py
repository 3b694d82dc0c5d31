"""YAML that remembers where each value was written.

`load_with_lines` returns plain Python data plus a map from each value's path
(``("jobs", 2, "prompt")``) to its 1-based line, so that every validation
problem can be reported as ``file:line: field.path: message``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from pipeline.errors import ManifestError, Problem
from pipeline.storable import unstorable

Path = tuple[str | int, ...]

#: deeper nesting than this is refused (a manifest is a few levels deep)
MAX_DEPTH = 64


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: `ON`/`OFF`/`yes`/`no` stay text.

    Ideogram's enums include `ON` and `OFF` (magic_prompt_option); under YAML
    1.1 rules they would silently become true/false.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class LineMap:
    """Lines of the values of one YAML document, looked up by field path."""

    def __init__(self) -> None:
        self._lines: dict[Path, int] = {}

    def set(self, path: Path, line: int) -> None:
        """Remember that the value at ``path`` starts on ``line``."""
        self._lines[path] = line

    def line_of(self, path: Path) -> int | None:
        """The line of ``path``, or of its closest enclosing value that has one."""
        probe = tuple(path)
        while probe:
            if probe in self._lines:
                return self._lines[probe]
            probe = probe[:-1]
        return self._lines.get((), None)


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines = LineMap()
        self.loader = _Loader("")
        self.problems: list[Problem] = []

    def build(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        line = node.start_mark.line + 1
        self.lines.set(path, line)
        if depth > MAX_DEPTH:
            raise ManifestError([Problem(self.file, line, _dotted(path), "nested too deeply")])
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    self.problems.append(
                        Problem(
                            self.file,
                            key_node.start_mark.line + 1,
                            _dotted(path),
                            "a key must be text",
                        )
                    )
                    continue
                if not isinstance(key, (str, int)):
                    key = str(key)
                if isinstance(key, str) and (why := unstorable(key)):
                    line = key_node.start_mark.line + 1
                    self.problems.append(Problem(self.file, line, _dotted(path), f"a key {why}"))
                    continue
                child = (*path, key)
                if key in result:
                    self.problems.append(
                        Problem(
                            self.file,
                            key_node.start_mark.line + 1,
                            _dotted(child),
                            "duplicate key (the earlier value would be silently lost)",
                        )
                    )
                    continue
                self.lines.set(child, key_node.start_mark.line + 1)
                result[key] = self.build(value_node, child, depth + 1)
                # the key's line is the more useful one for errors about the value
                self.lines.set(child, key_node.start_mark.line + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        value = self.loader.construct_object(node, deep=True)
        if isinstance(value, str) and (why := unstorable(value)):
            self.problems.append(Problem(self.file, line, _dotted(path), why))
        return value


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def dotted(path: Path) -> str:
    """``("jobs", 2, "prompt")`` as ``jobs[2].prompt``."""
    return _dotted(path)


def load_with_lines(text: str, file: str) -> tuple[Any, LineMap]:
    """Parse one YAML document; raise `ManifestError` on syntax errors or duplicate keys."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        # an unclosed quote is best shown where it opened; other errors where they were found
        scanning = isinstance(exc, yaml.scanner.ScannerError) and exc.context_mark is not None
        mark = exc.context_mark if scanning else (exc.problem_mark or exc.context_mark)
        line = mark.line + 1 if mark is not None else None
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ManifestError([Problem(file, line, "", f"YAML syntax error: {message}")]) from exc
    except yaml.reader.ReaderError as exc:
        # a character YAML refuses outright (a raw NUL, a control character): locate it
        line = text.count("\n", 0, exc.position) + 1
        message = f"YAML error: unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ManifestError([Problem(file, line, "", message)]) from exc
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, None, "", f"YAML error: {exc}")]) from exc
    except RecursionError as exc:
        raise ManifestError([Problem(file, None, "", "YAML nested too deeply")]) from exc
    if node is None:
        raise ManifestError([Problem(file, 1, "", "the manifest is empty")])
    builder = _Builder(file)
    try:
        data = builder.build(node, ())
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ManifestError([Problem(file, line, "", f"YAML error: {exc.problem}")]) from exc
    if builder.problems:
        raise ManifestError(builder.problems)
    return data, builder.lines
