"""``hexdbt validate``: what is wrong with a mapping, found before a dbt build depends on it.

Pure checks over the mapping file, dbt's manifest.json and (optionally) Hex's answers, each
problem returned as a ``Finding`` with a file and line, so that an editor or a CI log points at it:

    hex_mappings.yml:17: error: selector 'custmers' matches no model (did you mean 'customers'?)

Codes (``Finding.code``), each with its severity:

    mapping-invalid        error    the file does not load (YAML, keys, values, a template that
                                    reads a secret such as HEX_API_TOKEN): the loader's error
    mapping-unreadable     error    the mapping file is missing or cannot be read
    no-mappings            error    no mapping file and no exposure declares a Hex project
    manifest-missing       warning  no manifest.json: selectors were not checked
    selector-needs-manifest warning without manifest.json (a plan from run_results.json
                                    alone), a selector other than a name skips its project
    exposure-invalid       error    an exposure's meta.hex (or its Hex link) is malformed
    selector-typo          error    a selector matches nothing and looks like a typo of a name
    selector-no-match      warning  a selector matches nothing (the project's others do)
    project-no-match       error    none of a project's selectors matches a model: it never runs
    project-id-format      warning  the project id is not shaped like a Hex id (a UUID)
    project-id-is-link     error    the project id is a Hex link: the id inside it is meant
    duplicate-project      warning  a project mapped twice with the same params: it runs once
    duplicate-conflict     error    a project mapped twice with the same params, other options
    template-render        warning  an input param does not render with a sample invocation
    template-secret        error    a template reads a secret (a variable name it computes)
    hex-not-found          error    Hex answers 404: no such project, or the token cannot see it
    hex-unpublished        error    the project was never published: Hex refuses to run it
    hex-trashed            error    the project is in the trash: Hex refuses to run it
    hex-archived           warning  the project is archived (it still runs)
    hex-rejected           error    a dryRun RunProject was refused (422/400: inputs, view id)
    hex-refused            error    Hex refused the token or could not be reached; checks stopped
    discover-unmapped-model warning Hex says the app reads a model its mapping lacks
    discover-stale-model   warning  the mapping names a model Hex does not list among what the
                                    app reads (Hex sees only the published app's SQL)
    discover-unmapped-app  warning  an app reads dbt models and nothing maps it
    discover-unavailable   warning  drift not checked: no GetQueriedTables (not Enterprise), or
                                    Hex failed meanwhile

The discover-* findings come only when there is no error before them.

Exit code: 0 when there are no errors (warnings allowed), 2 when the mapping has errors, 4 when
Hex refused something (the highest wins).

``local`` checks the mapping on its own and against the manifest (``validate_mapping``);
``remote`` asks Hex (``check_remote``); ``findings`` holds what both report.
"""

from hexdbt.validate.findings import (
    EXIT_HEX_REFUSED,
    EXIT_MAPPING_ERRORS,
    Finding,
    MappedProject,
    Severity,
    Validation,
    exit_code_of,
    in_file_order,
    summary_line,
)
from hexdbt.validate.local import validate_mapping
from hexdbt.validate.remote import check_drift, check_remote

__all__ = [
    "EXIT_HEX_REFUSED",
    "EXIT_MAPPING_ERRORS",
    "Finding",
    "MappedProject",
    "Severity",
    "Validation",
    "check_drift",
    "check_remote",
    "exit_code_of",
    "in_file_order",
    "summary_line",
    "validate_mapping",
]
