"""hex_mappings.yml (version 1) and dbt exposures -> a validated MappingSet.

Every problem is a ConfigError (exit 2) naming the file, the line and the key, e.g.
``hex_mappings.yml:14: projects[1].triger: unknown key (did you mean 'trigger'?)``.
The keys, their types and defaults are declared once, by the models in ``schema.py``: the loader
validates with them, and the JSON Schema for editors (hex_mappings.schema.json) is generated from
them. docs/mapping.md documents them for people.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from hexdbt.dbt.artifacts import DATA_RESOURCE_TYPES, Exposure, Manifest
from hexdbt.errors import ConfigError
from hexdbt.hex.models import update_published_results_for
from hexdbt.mapping.model import EXPOSURE_SOURCE_PREFIX, MappingSet, ProjectMapping
from hexdbt.mapping.selectors import Selector
from hexdbt.settings import MAPPINGS_ENV, mappings_file_from_env

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError
    from pydantic_core import ErrorDetails

    from hexdbt.mapping.schema import Settings

DEFAULT_MAPPINGS_FILE = "hex_mappings.yml"
SUPPORTED_VERSION = 1

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_QUOTED = re.compile(r"'([^']*)'")

KeyPath = tuple[str | int, ...]
Model = TypeVar("Model", bound="BaseModel")


@dataclass
class _Location:
    """Turns a key path into ``file:line: key`` for messages."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)
    key_lines: dict[KeyPath, int] = field(default_factory=dict)

    def line(self, path: KeyPath, *, of_key: bool = False) -> int | None:
        if of_key and path in self.key_lines:
            return self.key_lines[path]
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(
        self, path: KeyPath, problem: str, *, of_key: bool = False, hint: str | None = None
    ) -> ConfigError:
        line = self.line(path, of_key=of_key)
        where = f"{self.file}:{line}" if line else self.file
        key = _key_path(path)
        return ConfigError(
            f"{where}: {key}: {problem}" if key else f"{where}: {problem}", hint=hint
        )


def _key_path(path: KeyPath) -> str:
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


# How many times aliases may repeat a block (a list or a mapping) in one mapping file.
MAX_ALIAS_REPEATS = 100


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
    # An alias makes a node appear again: nested ones multiply (a "billion laughs" file grows to
    # gigabytes), and one inside its own anchor never ends. Real mapping files repeat a block a
    # few times, so past a small bound it is refused.
    seen: set[int] = set()
    inside: set[int] = set()
    repeats = 0

    def convert(node: yaml.Node, path: KeyPath) -> Any:
        nonlocal repeats
        location.lines[path] = node.start_mark.line + 1
        if id(node) in inside:
            raise location.error(path, "an alias refers to the block it is in (it never ends)")
        if id(node) in seen and isinstance(node, yaml.CollectionNode):
            repeats += 1
            if repeats > MAX_ALIAS_REPEATS:
                raise location.error(
                    path,
                    f"aliases repeat blocks more than {MAX_ALIAS_REPEATS} times; write the"
                    " blocks out or use `defaults:`",
                )
        seen.add(id(node))
        inside.add(id(node))
        try:
            return convert_node(node, path)
        finally:
            inside.discard(id(node))

    def convert_node(node: yaml.Node, path: KeyPath) -> Any:
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
# Validation by the declared model


def _type_name(value: Any) -> str:
    from hexdbt.mapping.schema import type_name

    return type_name(value)


def _validated(model: type[Model], document: Any, base: KeyPath, location: _Location) -> Model:
    from pydantic import ValidationError

    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise _config_error(exc, base, location) from None


def _config_error(exc: ValidationError, base: KeyPath, location: _Location) -> ConfigError:
    """The first problem in reading order; an unknown key first, since it often explains the
    others (``model:`` for ``models:`` also leaves ``models`` missing)."""
    problems = [_problem(error, base) for error in exc.errors(include_url=False)]
    path, text, of_key = min(
        problems,
        key=lambda found: (not found[2], location.line(found[0], of_key=found[2]) or 0),
    )
    return location.error(path, text, of_key=of_key)


def _problem(error: ErrorDetails, base: KeyPath) -> tuple[KeyPath, str, bool]:
    """(key path, problem, whether the key's line is meant) of one of pydantic's errors."""
    kind, path, value = error["type"], (*base, *error["loc"]), error.get("input")
    context = error.get("ctx") or {}
    if kind == "hexdbt_mapping":
        return (*path, *context["subpath"]), context["message"], context["of_key"]
    if kind == "missing":
        return path[:-1], f"missing required key {path[-1]!r}", False
    if kind == "bool_type":
        text = f"expected true or false, got {_type_name(value)} {value!r}"
    elif kind in ("enum", "literal_error"):
        choices = _QUOTED.findall(str(context.get("expected", "")))
        expected = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
        text = f"expected {expected}, got {value!r}"
    elif kind in ("string_type", "string_too_short"):
        text = f"expected a non-empty string, got {value!r}"
    elif kind == "list_type":
        text = f"expected a list, got {_type_name(value)}"
    elif kind in ("model_type", "dict_type"):
        text = f"expected a mapping, got {_type_name(value)}"
    else:
        text = f"{error['msg'][0].lower()}{error['msg'][1:]}, got {value!r}"
    return path, text, False


def _given(settings: Settings) -> dict[str, Any]:
    """The settings a project, ``defaults:`` or ``meta.hex`` gave, as ProjectMapping takes them."""
    from hexdbt.mapping.schema import Settings

    return settings.model_dump(
        by_alias=True, exclude_unset=True, include=set(Settings.model_fields)
    )


def _project(
    name: str,
    project_id: str,
    models: tuple[Selector, ...],
    given: Mapping[str, Any],
    path: KeyPath,
    location: _Location,
    source: str,
    *,
    discovered: bool = False,
) -> ProjectMapping:
    from hexdbt.mapping.schema import Settings

    merged = Settings().model_dump(by_alias=True) | dict(given)
    if merged["view_id"] and merged["input_params"]:
        raise location.error(
            (*path, "view_id"),
            "Hex refuses a view_id together with input_params: give one or the other",
        )
    try:
        merged["update_published_results"] = update_published_results_for(
            merged["update_published_results"],
            merged["input_params"],
            where="update_published_results",
        )
    except ConfigError as exc:
        raise location.error(path, exc.message, hint=exc.hint) from None
    merged["notifications"] = tuple(merged["notifications"])
    return ProjectMapping(
        name=name,
        project_id=project_id,
        models=models,
        source=source,
        discovered=discovered,
        **merged,
    )


# ----------------------------------------------------------------------------------------------
# The file


def parse_mappings(text: str, file_label: str) -> MappingSet:
    """Validate the text of a hex_mappings.yml; ``file_label`` names it in messages."""
    from hexdbt.mapping.schema import MappingFile

    location = _Location(file_label)
    document = _read_yaml(text, location)
    if document is None:
        raise ConfigError(f"{file_label}: is empty", hint="start from docs/mapping.md")
    if not isinstance(document, dict):
        raise location.error(
            (), f"expected a mapping with version and projects, got {_type_name(document)}"
        )
    # The version first: the keys of another version are no mistake, just not this hexdbt's.
    if "version" not in document:
        raise location.error((), "missing required key 'version' (use version: 1)")
    if document["version"] != SUPPORTED_VERSION or isinstance(document["version"], bool):
        raise location.error(
            ("version",),
            f"version {document['version']!r} is not supported; this hexdbt reads version 1",
        )
    mapping_file = _validated(MappingFile, document, (), location)

    defaults = _given(mapping_file.defaults) if mapping_file.defaults else {}
    projects: list[ProjectMapping] = []
    first_line_of: dict[str, int | None] = {}
    for index, entry in enumerate(mapping_file.projects or ()):
        path: KeyPath = ("projects", index)
        if entry.name in first_line_of:
            raise location.error(
                (*path, "name"),
                f"duplicate name {entry.name!r} (first used on line {first_line_of[entry.name]})",
            )
        first_line_of[entry.name] = location.line((*path, "name"))
        settings = _given(entry)
        if "input_params" in defaults and "input_params" in settings:
            # A project's params extend the defaults' params; the project wins per name.
            settings["input_params"] = {**defaults["input_params"], **settings["input_params"]}
        projects.append(
            _project(
                entry.name,
                entry.project_id,
                tuple(entry.models),
                {**defaults, **settings},
                path,
                location,
                source=f"{file_label}:{location.line(path)}",
                discovered=entry.discovered,
            )
        )
    file_defaults = mapping_file.defaults
    return MappingSet(
        projects=tuple(projects),
        path=file_label,
        discover_auto=file_defaults is not None and file_defaults.discover == "auto",
        discover_max_age_hours=file_defaults.discover_max_age_hours if file_defaults else 24.0,
        defaults=defaults,
    )


def discovered_mapping(
    mappings: MappingSet, name: str, project_id: str, models: tuple[Selector, ...], source: str
) -> ProjectMapping:
    """A project that discovery found and no entry maps, with the file's defaults."""
    location = _Location(mappings.path or DEFAULT_MAPPINGS_FILE)
    return _project(
        name, project_id, models, mappings.defaults or {}, (), location, source, discovered=True
    )


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
    from hexdbt.mapping.schema import ExposureSettings

    hex_meta = exposure.meta.get("hex")
    label = f"{manifest.path}: exposure {exposure.name} ({exposure.original_file_path})"
    location = _Location(label)
    path: KeyPath = ("meta", "hex")
    if hex_meta is None or hex_meta is True:
        hex_meta = {}
    if not isinstance(hex_meta, dict):
        raise location.error(path, f"expected a mapping, got {_type_name(hex_meta)}")
    settings = _validated(ExposureSettings, hex_meta, path, location)
    project_id = settings.project_id or project_id_from_url(exposure.url)
    if not project_id:
        if exposure.meta.get("hex") is not None:
            raise location.error(path, "no project_id, and the url is not a Hex app link")
        return None
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
        _given(settings),
        path,
        location,
        source=f"{EXPOSURE_SOURCE_PREFIX}{exposure.name}",
    )


# ----------------------------------------------------------------------------------------------
# Entry point


def resolve_mappings_path(flag_value: str | Path | None = None) -> tuple[Path, bool]:
    """The mapping file and whether it was asked for explicitly (flag or HEXDBT_MAPPINGS)."""
    if flag_value:
        return Path(flag_value), True
    from_env = mappings_file_from_env()
    if from_env:
        return Path(from_env), True
    return Path(DEFAULT_MAPPINGS_FILE), False


def load_mappings(path: str | Path | None, manifest: Manifest | None = None) -> MappingSet:
    """Load hex_mappings.yml (``path`` None: none) and add the manifest's Hex exposures.

    Where the file and an exposure name the same Hex project, the file wins.
    """
    file_set = MappingSet(projects=())
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
        file_set = parse_mappings(text, label)
    file_projects = file_set.projects

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
    return replace(
        file_set,
        projects=(*file_projects, *kept),
        path=label,
        overridden_exposures=tuple(overridden),
    )


def _renamed(mapping: ProjectMapping, name: str) -> ProjectMapping:
    return replace(mapping, name=name)
