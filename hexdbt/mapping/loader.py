"""hex_mappings.yml (version 1) and dbt exposures -> a validated MappingSet.

Every problem is a ConfigError (exit 2) naming the file, the line and the key, e.g.
``hex_mappings.yml:14: projects[1].triger: unknown key (did you mean 'trigger'?)``.
The keys and defaults are documented in docs/mapping.md and described for editors by the JSON
Schema shipped beside this module (hex_mappings.schema.json).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hexdbt.dbt.artifacts import DATA_RESOURCE_TYPES, Exposure, Manifest
from hexdbt.errors import ConfigError
from hexdbt.mapping.model import MappingSet, ProjectMapping, TriggerRule
from hexdbt.mapping.selectors import Selector, SelectorError, parse_selector
from hexdbt.mapping.templates import check_syntax, is_template

DEFAULT_MAPPINGS_FILE = "hex_mappings.yml"
MAPPINGS_ENV = "HEXDBT_MAPPINGS"
SUPPORTED_VERSION = 1

TOP_LEVEL_KEYS = ("version", "defaults", "projects")
IDENTITY_KEYS = ("name", "project_id", "models")
NOTIFICATION_TYPES = ("SUCCESS", "FAILURE", "ALL")
NOTIFICATION_KEYS = (
    "type",
    "includeSuccessScreenshot",
    "screenshotFormat",
    "slackChannelIds",
    "userIds",
    "groupIds",
    "subject",
    "body",
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class _Location:
    """Turns a key path into ``file:line: key`` for messages."""

    file: str
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)
    key_lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)

    def line(self, path: tuple[str | int, ...], *, of_key: bool = False) -> int | None:
        if of_key and path in self.key_lines:
            return self.key_lines[path]
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(
        self, path: tuple[str | int, ...], problem: str, *, of_key: bool = False
    ) -> ConfigError:
        line = self.line(path, of_key=of_key)
        where = f"{self.file}:{line}" if line else self.file
        key = _key_path(path)
        return ConfigError(f"{where}: {key}: {problem}" if key else f"{where}: {problem}")


def _key_path(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


# ----------------------------------------------------------------------------------------------
# YAML with line numbers


def _plain(value: Any) -> Any:
    # YAML dates would not survive JSON on their way to Hex; they become ISO text.
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _read_yaml(text: str, location: _Location) -> Any:
    import yaml

    # libyaml's loader (in PyYAML's wheels) is ~10x faster; the watcher reads the file per build.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        where = f"{location.file}:{line}" if line else location.file
        raise ConfigError(f"{where}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{location.file}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if root is None:
        return None

    def convert(node: yaml.Node, path: tuple[str | int, ...]) -> Any:
        location.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise location.error(path, f"key {key!r} is not a string")
                if key in result:
                    location.lines[(*path, key)] = key_node.start_mark.line + 1
                    raise location.error((*path, key), "duplicate key")
                location.key_lines[(*path, key)] = key_node.start_mark.line + 1
                result[key] = convert(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, (*path, index)) for index, item in enumerate(node.value)]
        return _plain(loader.construct_object(node, deep=True))

    return convert(root, ())


# ----------------------------------------------------------------------------------------------
# Values


Checker = Callable[[Any, tuple[str | int, ...], _Location], Any]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


def _boolean(value: Any, path: tuple[str | int, ...], location: _Location) -> bool:
    if not isinstance(value, bool):
        raise location.error(path, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _trigger_rule(value: Any, path: tuple[str | int, ...], location: _Location) -> TriggerRule:
    try:
        return TriggerRule(value)
    except ValueError:
        raise location.error(path, f"expected any or all, got {value!r}") from None


def _optional_text(value: Any, path: tuple[str | int, ...], location: _Location) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise location.error(path, f"expected a non-empty string or null, got {value!r}")
    return value.strip()


def _timeout(value: Any, path: tuple[str | int, ...], location: _Location) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise location.error(path, f"expected a positive number of minutes, got {value!r}")
    return float(value)


def _input_params(value: Any, path: tuple[str | int, ...], location: _Location) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise location.error(
            path, f"expected a mapping of input name to value, got {_type_name(value)}"
        )
    for name, param in value.items():
        _check_param(param, (*path, name), location)
    return value


def _check_param(value: Any, path: tuple[str | int, ...], location: _Location) -> None:
    if value is None:
        raise location.error(path, "null is not a value Hex accepts; leave the param out instead")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_param(item, (*path, index), location)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_param(item, (*path, key), location)
    elif is_template(value):
        problem = check_syntax(value)
        if problem:
            raise location.error(path, f"template syntax error: {problem}")


def _notifications(
    value: Any, path: tuple[str | int, ...], location: _Location
) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        raise location.error(path, f"expected a list, got {_type_name(value)}")
    for index, item in enumerate(value):
        item_path = (*path, index)
        if not isinstance(item, dict):
            raise location.error(item_path, f"expected a mapping, got {_type_name(item)}")
        _unknown_keys(item, NOTIFICATION_KEYS, item_path, location)
        if item.get("type") not in NOTIFICATION_TYPES:
            raise location.error(
                (*item_path, "type"),
                f"expected one of {', '.join(NOTIFICATION_TYPES)}, got {item.get('type')!r}",
            )
    return tuple(value)


# Every setting a project (or `defaults:`, or an exposure's meta.hex) may give: checker, default.
SETTINGS: dict[str, tuple[Checker, Any]] = {
    "trigger": (_trigger_rule, TriggerRule.ANY),
    "require_tests": (_boolean, False),
    "input_params": (_input_params, {}),
    # None: true, unless input params are given (Hex ignores inputs when it writes published
    # results, so a run with params must not ask for it).
    "update_published_results": (_boolean, None),
    "use_cached_sql_results": (_boolean, False),
    "view_id": (_optional_text, None),
    "notifications": (_notifications, ()),
    "wait": (_boolean, True),
    "timeout_minutes": (_timeout, 60.0),
    "cancel_on_timeout": (_boolean, True),
    "enabled": (_boolean, True),
}
PROJECT_KEYS = (*IDENTITY_KEYS, *SETTINGS)


def _unknown_keys(
    document: Mapping[str, Any],
    allowed: tuple[str, ...],
    path: tuple[str | int, ...],
    location: _Location,
) -> None:
    for key in document:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise location.error((*path, key), f"unknown key{hint}", of_key=True)


def _settings(
    document: Mapping[str, Any], path: tuple[str | int, ...], location: _Location
) -> dict[str, Any]:
    return {
        key: SETTINGS[key][0](value, (*path, key), location)
        for key, value in document.items()
        if key in SETTINGS
    }


def _required_text(
    document: Mapping[str, Any], key: str, path: tuple[str | int, ...], location: _Location
) -> str:
    if key not in document:
        raise location.error(path, f"missing required key {key!r}")
    value = document[key]
    if not isinstance(value, str) or not value.strip():
        raise location.error((*path, key), f"expected a non-empty string, got {value!r}")
    return value.strip()


def _selectors(
    value: Any, path: tuple[str | int, ...], location: _Location
) -> tuple[Selector, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise location.error(path, "expected a non-empty list of model selectors")
    selectors = []
    for index, text in enumerate(value):
        if not isinstance(text, str):
            raise location.error((*path, index), f"expected a selector string, got {text!r}")
        try:
            selectors.append(parse_selector(text))
        except SelectorError as exc:
            raise location.error((*path, index), str(exc)) from None
    return tuple(selectors)


def _project(
    name: str,
    project_id: str,
    models: tuple[Selector, ...],
    settings: Mapping[str, Any],
    path: tuple[str | int, ...],
    location: _Location,
    source: str,
) -> ProjectMapping:
    merged = {key: default for key, (_, default) in SETTINGS.items()} | dict(settings)
    if merged["view_id"] and merged["input_params"]:
        raise location.error(
            (*path, "view_id"),
            "Hex refuses a view_id together with input_params: give one or the other",
        )
    if merged["update_published_results"] is None:
        merged["update_published_results"] = not merged["input_params"]
    elif merged["update_published_results"] and merged["input_params"]:
        raise location.error(
            path,
            "update_published_results is true and input_params are given, but Hex ignores input"
            " params when it writes published results: set update_published_results: false,"
            " or leave it out (hexdbt then sends false for runs with params)",
        )
    merged["input_params"] = dict(merged["input_params"])
    return ProjectMapping(name=name, project_id=project_id, models=models, source=source, **merged)


# ----------------------------------------------------------------------------------------------
# The file


def parse_mappings(text: str, file_label: str) -> MappingSet:
    """Validate the text of a hex_mappings.yml; ``file_label`` names it in messages."""
    location = _Location(file_label)
    document = _read_yaml(text, location)
    if document is None:
        raise ConfigError(f"{file_label}: is empty", hint="start from docs/mapping.md")
    if not isinstance(document, dict):
        raise location.error(
            (), f"expected a mapping with version and projects, got {_type_name(document)}"
        )
    _unknown_keys(document, TOP_LEVEL_KEYS, (), location)
    if "version" not in document:
        raise location.error((), "missing required key 'version' (use version: 1)")
    if document["version"] != SUPPORTED_VERSION or isinstance(document["version"], bool):
        raise location.error(
            ("version",),
            f"version {document['version']!r} is not supported; this hexdbt reads version 1",
        )

    defaults_document = document.get("defaults") or {}
    if not isinstance(defaults_document, dict):
        raise location.error(
            ("defaults",), f"expected a mapping, got {_type_name(defaults_document)}"
        )
    _unknown_keys(defaults_document, tuple(SETTINGS), ("defaults",), location)
    defaults = _settings(defaults_document, ("defaults",), location)

    projects_document = document.get("projects")
    if projects_document is None:
        projects_document = []
    if not isinstance(projects_document, list):
        raise location.error(("projects",), f"expected a list, got {_type_name(projects_document)}")

    projects: list[ProjectMapping] = []
    first_line_of: dict[str, int | None] = {}
    for index, raw in enumerate(projects_document):
        path: tuple[str | int, ...] = ("projects", index)
        if not isinstance(raw, dict):
            raise location.error(path, f"expected a mapping, got {_type_name(raw)}")
        _unknown_keys(raw, PROJECT_KEYS, path, location)
        name = _required_text(raw, "name", path, location)
        if name in first_line_of:
            raise location.error(
                (*path, "name"),
                f"duplicate name {name!r} (first used on line {first_line_of[name]})",
            )
        first_line_of[name] = location.line((*path, "name"))
        project_id = _required_text(raw, "project_id", path, location)
        if "models" not in raw:
            raise location.error(path, "missing required key 'models'")
        models = _selectors(raw["models"], (*path, "models"), location)
        settings = _settings(raw, path, location)
        if "input_params" in defaults and "input_params" in settings:
            # A project's params extend the defaults' params; the project wins per name.
            settings["input_params"] = {**defaults["input_params"], **settings["input_params"]}
        projects.append(
            _project(
                name,
                project_id,
                models,
                {**defaults, **settings},
                path,
                location,
                source=f"{file_label}:{location.line(path)}",
            )
        )
    return MappingSet(projects=tuple(projects), path=file_label)


# ----------------------------------------------------------------------------------------------
# Exposures


def project_id_from_url(url: str | None) -> str | None:
    """The project id in a Hex app link: ``https://app.hex.tech/<workspace>/app/<id>/latest``,
    ``.../hex/<id>/draft/logic``, also with a title slug before the id, on any *.hex.tech host."""
    if not url:
        return None
    parsed = urlparse(url.strip())
    host = (parsed.hostname or "").lower()
    if host != "hex.tech" and not host.endswith(".hex.tech"):
        return None
    segments = [segment for segment in parsed.path.split("/") if segment]
    for index, segment in enumerate(segments[:-1]):
        if segment in ("app", "hex"):
            match = _UUID.search(segments[index + 1])
            if match:
                return match[0].lower()
    return None


EXPOSURE_KEYS = ("project_id", *SETTINGS)


def mappings_from_exposures(manifest: Manifest) -> list[ProjectMapping]:
    """A dbt exposure naming a Hex project (``meta.hex.project_id`` or a Hex app ``url``) maps
    that project to the exposure's ``depends_on`` models, with the settings in ``meta.hex``."""
    projects = []
    for exposure in manifest.exposures.values():
        mapping = _mapping_from_exposure(exposure, manifest)
        if mapping is not None:
            projects.append(mapping)
    return projects


def _mapping_from_exposure(exposure: Exposure, manifest: Manifest) -> ProjectMapping | None:
    hex_meta = exposure.meta.get("hex")
    label = f"{manifest.path}: exposure {exposure.name} ({exposure.original_file_path})"
    location = _Location(label)
    path: tuple[str | int, ...] = ("meta", "hex")
    if hex_meta is None or hex_meta is True:
        hex_meta = {}
    if not isinstance(hex_meta, dict):
        raise location.error(path, f"expected a mapping, got {_type_name(hex_meta)}")
    project_id = hex_meta.get("project_id") or project_id_from_url(exposure.url)
    if not project_id:
        if exposure.meta.get("hex") is not None:
            raise location.error(path, "no project_id, and the url is not a Hex app link")
        return None
    if not isinstance(project_id, str):
        raise location.error((*path, "project_id"), f"expected a string, got {project_id!r}")
    _unknown_keys(hex_meta, EXPOSURE_KEYS, path, location)
    models = tuple(
        Selector(node_id, "unique_id", node_id)
        for node_id in exposure.depends_on
        if node_id.split(".", 1)[0] in DATA_RESOURCE_TYPES
    )
    if not models:
        raise location.error(("depends_on",), "declares a Hex app but depends on no model")
    return _project(
        exposure.name,
        project_id,
        models,
        _settings(hex_meta, path, location),
        path,
        location,
        source=f"exposure {exposure.name}",
    )


# ----------------------------------------------------------------------------------------------
# Entry point


def resolve_mappings_path(flag_value: str | Path | None = None) -> tuple[Path, bool]:
    """The mapping file and whether it was asked for explicitly (flag or HEXDBT_MAPPINGS)."""
    if flag_value:
        return Path(flag_value), True
    from_env = os.environ.get(MAPPINGS_ENV)
    if from_env:
        return Path(from_env), True
    return Path(DEFAULT_MAPPINGS_FILE), False


def load_mappings(path: str | Path | None, manifest: Manifest | None = None) -> MappingSet:
    """Load hex_mappings.yml (``path`` None: none) and add the manifest's Hex exposures.

    Where the file and an exposure name the same Hex project, the file wins.
    """
    file_projects: tuple[ProjectMapping, ...] = ()
    label: str | None = None
    if path is not None:
        path = Path(path)
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: mapping file not found",
                hint=f"create it (see docs/mapping.md) or point --mappings / {MAPPINGS_ENV} at it",
            ) from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a mapping file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the mapping file: {exc.strerror}") from exc
        file_projects = parse_mappings(text, label).projects

    exposures = mappings_from_exposures(manifest) if manifest is not None else []
    mapped_ids = {project.project_id for project in file_projects}
    used_names = {project.name for project in file_projects}
    kept: list[ProjectMapping] = []
    overridden: list[str] = []
    for exposure_mapping in exposures:
        if exposure_mapping.project_id in mapped_ids:
            overridden.append(exposure_mapping.name)
            continue
        if exposure_mapping.name in used_names:
            # Keep both: a name clash between the file and dbt must not hide either project.
            exposure_mapping = _renamed(exposure_mapping, f"exposure:{exposure_mapping.name}")
        used_names.add(exposure_mapping.name)
        kept.append(exposure_mapping)
    return MappingSet(
        projects=(*file_projects, *kept), path=label, overridden_exposures=tuple(overridden)
    )


def _renamed(mapping: ProjectMapping, name: str) -> ProjectMapping:
    from dataclasses import replace

    return replace(mapping, name=name)
