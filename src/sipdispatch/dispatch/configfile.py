"""Loading the YAML configuration: one clear error for everything wrong in it.

YAML syntax errors, duplicate keys and validation errors all become one
`ConfigError` whose message has a line per problem, naming the file, the line
when known and the field path::

    config.yaml:12: sets[0].destinations[1].uri: 'foo' is not a SIP URI (...)
    config.yaml:3: probing.interval: Input should be greater than 0 (got -1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from sipdispatch.dispatch import config as _config

__all__ = [
    "ConfigError",
    "Issue",
    "load_config",
    "parse_config",
    "validate_config",
    "validation_issues",
]


Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """One thing wrong with a configuration (or a custom resource's spec): where and why."""

    path: Path_
    message: str
    line: int | None = None

    @property
    def location(self) -> str:
        """The field path as people write it: ``sets[0].destinations[1].uri``."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
        return text

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.path else self.message


class ConfigError(ValueError):
    """Every problem of a configuration, one per line of the message."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        lines = []
        for issue in issues:
            where = source if issue.line is None else f"{source}:{issue.line}"
            field = f" {issue.location}:" if issue.path else ""
            lines.append(f"{where}:{field} {issue.message}")
        super().__init__("\n".join(lines))


def validation_issues(exc: ValidationError, prefix: Path_ = ()) -> list[Issue]:
    """The errors of a model's validation, each named by its field path (below ``prefix``)."""
    issues = []
    for error in exc.errors(include_url=False):
        path: Path_ = (*prefix, *error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "config_issue":
            path += tuple(ctx.get("subpath", ()))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] not in ("value_error", "config_issue"):
            message = f"{message} (got {error['input']!r})"
        issues.append(Issue(path, message))
    return issues


def validate_config(data: object, source: str = "config") -> _config.ProxyConfig:
    """Validate already-parsed data (a dict from YAML or a custom resource)."""
    try:
        return _config.ProxyConfig.model_validate({} if data is None else data)
    except ValidationError as exc:
        raise ConfigError(source, validation_issues(exc)) from None


def _line_of(root: yaml.Node | None, path: Path_) -> int | None:
    """The line of the deepest node along `path` (1-based)."""
    node, line = root, None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            names = {str(part), _snake(str(part))}
            node = next((v for k, v in node.value if str(k.value) in names), None)
            if node is not None and isinstance(part, str):
                line = node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _duplicate_keys(node: yaml.Node | None, path: Path_ = ()) -> list[Issue]:
    # PyYAML keeps the last of two equal keys silently; say so instead.
    issues: list[Issue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                issues.append(Issue((*path, name), "key given twice", key.start_mark.line + 1))
            seen.add(name)
            issues += _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            issues += _duplicate_keys(item, (*path, i))
    return issues


def parse_config(text: str, source: str = "config.yaml") -> _config.ProxyConfig:
    """Parse and validate YAML text; raises `ConfigError`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError(source, [Issue((), f"invalid YAML: {problem}", line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [Issue((), f"invalid YAML: {exc}")]) from None
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise ConfigError(source, duplicates)
    try:
        return validate_config(data, source)
    except ConfigError as exc:
        issues = [Issue(i.path, i.message, _line_of(root, i.path)) for i in exc.issues]
        raise ConfigError(source, issues) from None


def load_config(path: str | Path) -> _config.ProxyConfig:
    """Read, parse and validate a YAML configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [Issue((), f"cannot read: {exc}")]) from None
    return parse_config(text, str(path))
