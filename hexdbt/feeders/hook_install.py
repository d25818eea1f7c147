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
    except yaml.YAMLError as exc:
        raise ConfigError(f"{project_file}: not valid YAML ({exc})") from None
    if not isinstance(project, dict):
        raise ConfigError(f"{project_file}: expected a mapping of dbt project settings")
    macro_paths = project.get("macro-paths") or ["macros"]
    macro_dir = project_dir / str(macro_paths[0]) / "hexdbt"
    macro_dir.mkdir(parents=True, exist_ok=True)
    source = resources.files("hexdbt").joinpath("dbt_package", "macros", MACRO_FILE)
    macro_path = macro_dir / MACRO_FILE
    macro_path.write_text(
        f"{{#- Installed by hexdbt {__version__} (`hexdbt hook install`): installing again"
        " replaces this file. -#}\n" + source.read_text(encoding="utf-8"),
        encoding="utf-8",
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
    project_file.write_text(
        f"{text}{separator}\n# hexdbt: what each invocation ran goes to the outbox for"
        f" `hexdbt relay`.\n{HOOK_LINE}\n",
        encoding="utf-8",
    )
    return HookInstall(macro_path, configured=True, written=True)
