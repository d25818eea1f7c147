"""``hexdbt hook install``: hexdbt's on-run-end hook into a dbt project.

The hook's macros are copied into the project's first macro folder (``macros/hexdbt/``) rather
than referenced as a local package: a copy needs no ``dbt deps``, no path to this Python
environment (which dbt Cloud and CI runners do not have), and is committed and reviewed with the
project; installing again replaces it with this hexdbt's version. dbt Cloud projects can take
the same macros from git instead (docs/hook.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hexdbt._version import __version__
from hexdbt.errors import ConfigError
from hexdbt.files import write_whole

HOOK_MACRO = "hexdbt_on_run_end"
HOOK_LINE = 'on-run-end: "{{ hexdbt_on_run_end(results) }}"'
MACRO_FILE = "hexdbt_outbox.sql"


@dataclass(frozen=True, slots=True)
class HookInstall:
    macro_path: Path
    # True when dbt_project.yml calls the hook (already, or written by this install).
    configured: bool
    written: bool


def install_hook(project_dir: Path, *, write: bool) -> HookInstall:
    """Copy the hook's macros into ``project_dir`` and, with ``write``, add the on-run-end line
    to its dbt_project.yml when it has no on-run-end yet."""
    import yaml

    project_file = project_dir / "dbt_project.yml"
    try:
        text = project_file.read_text(encoding="utf-8")
        project = yaml.safe_load(text)
    except OSError as exc:
        raise ConfigError(f"{project_file}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{project_file}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{project_file}: not valid YAML ({exc})") from None
    if not isinstance(project, dict):
        raise ConfigError(f"{project_file}: expected a mapping of dbt project settings")
    macro_path = _macro_path(project_dir, project_file, project.get("macro-paths"))
    source = resources.files("hexdbt").joinpath("dbt_package", "macros", MACRO_FILE)
    write_whole(
        macro_path,
        f"{{#- Installed by hexdbt {__version__} (`hexdbt hook install`): installing again"
        " replaces this file. -#}\n" + source.read_text(encoding="utf-8"),
        what="the hook's macros",
    )
    hooks = project.get("on-run-end", project.get("on_run_end"))
    listed = hooks if isinstance(hooks, list) else [hooks] if hooks else []
    if any(HOOK_MACRO in str(hook) for hook in listed):
        return HookInstall(macro_path, configured=True, written=False)
    if not write:
        return HookInstall(macro_path, configured=False, written=False)
    if listed:
        raise ConfigError(
            f"{project_file}: on-run-end is set already, so it is left as it is",
            hint=f'add "{{{{ {HOOK_MACRO}(results) }}}}" to its list yourself',
        )
    separator = "" if text.endswith("\n") else "\n"
    write_whole(
        project_file,
        f"{text}{separator}\n# hexdbt: what each invocation ran goes to the outbox for"
        f" `hexdbt relay`.\n{HOOK_LINE}\n",
        what="the dbt project file",
    )
    return HookInstall(macro_path, configured=True, written=True)


def _macro_path(project_dir: Path, project_file: Path, macro_paths: object) -> Path:
    """Where the macros go: ``hexdbt/`` in the project's first macro folder. It must lie inside
    the project, symlinks followed: a dbt_project.yml (or a link) does not send hexdbt's writes
    elsewhere on the machine."""
    if macro_paths is None or macro_paths == []:
        macro_paths = ["macros"]
    if not isinstance(macro_paths, list) or not all(isinstance(p, str) for p in macro_paths):
        raise ConfigError(
            f"{project_file}: macro-paths must be a list of folders, got {macro_paths!r}"
        )
    macro_path: Path = project_dir / macro_paths[0] / "hexdbt" / MACRO_FILE
    try:
        root = project_dir.resolve()
        lands_at = macro_path.resolve()
    except (OSError, ValueError) as exc:  # a loop of links, a NUL in the name
        raise ConfigError(f"{project_file}: macro-paths {macro_paths[0]!r}: {exc}") from None
    if not lands_at.is_relative_to(root):
        raise ConfigError(
            f"{project_file}: macro-paths {macro_paths[0]!r} leads outside the dbt project"
            f" (to {lands_at.parent}); hexdbt writes its macros only inside {root}"
        )
    return macro_path
