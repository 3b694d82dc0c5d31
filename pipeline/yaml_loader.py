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
#: alias uses (``*name``) allowed in one manifest
MAX_ALIASES = 100
#: values built a second time through aliases and merge keys (``<<: *defaults``) allowed in
#: one manifest: an alias "bomb" of a few hundred bytes would otherwise expand to billions
MAX_ALIAS_VALUES = 10_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TooManyAliases(yaml.MarkedYAMLError):
    """More than `MAX_ALIASES` alias uses in one document."""


class _Loader(yaml.SafeLoader):
    """SafeLoader reading plain scalars by the YAML 1.2 core schema, with a cap on alias uses.

    PyYAML resolves YAML 1.1: `16:9` and `1:30` become base-60 integers (969,
    90), `yes`/`no`/`on`/`off` booleans (Ideogram's `ON`/`OFF` enum values
    among them), `0o17` a string and `012` octal 10, `2024-01-02` a date. Here
    only the core schema's forms are typed (see `_core_schema`); everything
    else is text, as YAML 1.2 says. Merge keys (`<<`) are kept.
    """

    aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose as PyYAML does, counting alias uses."""
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooManyAliases(problem=f"more than {MAX_ALIASES} aliases", problem_mark=mark)
        return super().compose_node(parent, index)


#: the YAML 1.2 core schema's plain scalars (YAML 1.2.2 §10.3.2), in the order they are tried
_CORE_SCHEMA: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (tag, pattern, the first characters of a match: PyYAML looks resolvers up by them,
    #  and an empty scalar under "")
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ("~", "n", "N", "")),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", tuple("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", tuple("-+0123456789")),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        tuple("-+.0123456789"),
    ),
    # not in YAML 1.2, but manifests use `<<: *defaults`; `_Builder` merges them with limits
    ("tag:yaml.org,2002:merge", r"^<<$", ("<",)),
)


def _core_schema() -> dict[str, list[tuple[str, re.Pattern[str]]]]:
    resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    for tag, pattern, first in _CORE_SCHEMA:
        regexp = re.compile(pattern)
        for char in first:
            resolvers.setdefault(char, []).append((tag, regexp))
    return resolvers


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    """An integer of the core schema: decimal (`012` is 12), `0o17` octal, `0x1F` hexadecimal."""
    value = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        if value.startswith("0o"):
            return int(value[2:], 8)
        if value.startswith("0x"):
            return int(value[2:], 16)
        if re.fullmatch(r"[-+]?[0-9]+", value):
            return int(value)
    except ValueError:
        pass
    raise yaml.constructor.ConstructorError(
        None, None, f"{value!r} is not a YAML 1.2 integer", node.start_mark
    )


def _construct_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    """A float of the core schema (`1e3`, `.5`, `-.inf`, `.nan`); no base-60 or `_` separators."""
    value = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    special = value.lower().lstrip("+")
    if special in (".inf", "-.inf", ".nan"):
        return float(special.replace(".", ""))
    try:
        return float(value)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, f"{value!r} is not a YAML 1.2 float", node.start_mark
        ) from None


_Loader.yaml_implicit_resolvers = _core_schema()
_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


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
    """Plain data from a composed node graph, with lines, problems and an alias budget.

    PyYAML's composer shares one node between an anchor and its aliases; the
    builder makes a separate copy for each use (every path gets its own line),
    so each node built again counts against `MAX_ALIAS_VALUES`.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines = LineMap()
        self.loader = _Loader("")
        self.problems: list[Problem] = []
        self._built: set[int] = set()
        self._repeats = 0
        #: where the alias being expanded was used: its path and line
        self._alias_use: tuple[Path, int | None] | None = None

    def build(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        outermost = self._count(node, path, 1)
        line = node.start_mark.line + 1
        self.lines.set(path, line)
        if depth > MAX_DEPTH:
            raise ManifestError([Problem(self.file, line, _dotted(path), "nested too deeply")])
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            self._fill(node, path, depth, result, own=True)
            value: Any = result
        elif isinstance(node, yaml.SequenceNode):
            value = [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        else:
            value = self.loader.construct_object(node, deep=True)
            if isinstance(value, str) and (why := unstorable(value)):
                self.problems.append(Problem(self.file, line, _dotted(path), why))
        if outermost:
            self._alias_use = None
        return value

    def _count(self, node: yaml.Node, path: Path, cost: int) -> bool:
        """Charge a node built again to the alias budget; true if it starts an alias's expansion."""
        if id(node) not in self._built:
            self._built.add(id(node))
            return False
        outermost = self._alias_use is None
        if outermost:
            # before `build` overwrites it, the path's line is where the alias was written
            self._alias_use = (path, self.lines.line_of(path))
        self._repeats += cost
        if self._repeats > MAX_ALIAS_VALUES:
            where, line = self._alias_use or (path, None)
            message = f"aliases expand to more than {MAX_ALIAS_VALUES} values (refused as an alias bomb)"
            raise ManifestError([Problem(self.file, line, _dotted(where), message)])
        return outermost

    def _fill(
        self, node: yaml.MappingNode, path: Path, depth: int, result: dict[Any, Any], own: bool
    ) -> None:
        """Add a mapping's entries to ``result``, then those its merge keys bring that it lacks.

        Own keys win over merged ones, and earlier merge sources over later
        ones (YAML's merge rule); only the mapping's own repeated keys are
        duplicates.
        """
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            key_line = key_node.start_mark.line + 1
            if key in result:
                if own:
                    message = "duplicate key (the earlier value would be silently lost)"
                    self.problems.append(Problem(self.file, key_line, _dotted(child), message))
                continue
            self.lines.set(child, key_line)
            result[key] = self.build(value_node, child, depth + 1)
            # the key's line is the more useful one for errors about the value
            self.lines.set(child, key_line)
        own_keys = list(result) if own and merges else []
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                line = source.start_mark.line + 1
                if not isinstance(source, yaml.MappingNode):
                    message = "a merge key (<<) takes a mapping or a list of mappings"
                    self.problems.append(Problem(self.file, line, _dotted(path), message))
                    continue
                if depth > MAX_DEPTH:  # a mapping can merge itself: `&a {<<: *a}`
                    raise ManifestError([Problem(self.file, line, _dotted(path), "merges nested too deeply")])
                outermost = self._count(source, path, 1 + len(source.value))
                self._fill(source, path, depth + 1, result, own=False)
                if outermost:
                    self._alias_use = None
        for key in own_keys:  # merged entries first, as PyYAML orders them
            result[key] = result.pop(key)

    def _key(self, key_node: yaml.Node, path: Path) -> str | int | None:
        """A mapping key as text or integer; None (and a problem) when it cannot be one."""
        line = key_node.start_mark.line + 1
        # a non-scalar key is never constructed: it could be a large aliased structure
        key = (
            self.loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else ()
        )
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            self.problems.append(Problem(self.file, line, _dotted(path), "a key must be text"))
            return None
        if not isinstance(key, (str, int)):
            key = str(key)
        if isinstance(key, str) and (why := unstorable(key)):
            self.problems.append(Problem(self.file, line, _dotted(path), f"a key {why}"))
            return None
        return key


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
    except _TooManyAliases as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        message = f"YAML error: {exc.problem} (*name); write the values out or use fewer aliases"
        raise ManifestError([Problem(file, line, "", message)]) from exc
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
