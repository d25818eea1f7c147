"""Every artifact fixture plans as the golden files say: the plans the reader gave before the
typed decoder replaced json.load (issue 18), so the decoder changes no plan.

The cases pair each run_results.json with each manifest.json of the same project (and with none),
planned with a mapping that uses every selector kind. A deliberate change of a plan is recorded
again with ``python tests/test_artifacts_golden.py`` and reviewed in the diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: record()

from hexdbt.dbt.artifacts import load_manifest, load_run_results
from hexdbt.mapping import load_mappings
from hexdbt.planner.rules import make_plan

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"
JAFFLE = FIXTURES / "dbt_artifacts"
SAMPLE = FIXTURES / "sample_build"
GOLDEN = FIXTURES / "golden_plans"


def _cases() -> dict[str, tuple[Path, Path | None, Path | None]]:
    """case name -> (run_results.json, manifest.json or None, mapping file or None)."""
    cases: dict[str, tuple[Path, Path | None, Path | None]] = {}
    jaffle_mappings = GOLDEN / "mappings_jaffle_shop.yml"
    for run_results in sorted(JAFFLE.glob("run_results_v*.json")):
        for manifest in [*sorted(JAFFLE.glob("manifest_v*.json")), None]:
            label = manifest.stem if manifest else "no_manifest"
            cases[f"{run_results.stem}__{label}"] = (run_results, manifest, jaffle_mappings)
    sample_mappings = GOLDEN / "mappings_sample.yml"
    for run_results in sorted(SAMPLE.glob("run_results_*.json")):
        build = run_results.stem.removeprefix("run_results_")
        manifest = SAMPLE / "manifest.json"
        cases[f"sample_{build}"] = (run_results, manifest, sample_mappings)
        cases[f"sample_{build}__exposures_only"] = (run_results, manifest, None)
        cases[f"sample_{build}__no_manifest"] = (run_results, None, sample_mappings)
    return cases


CASES = _cases()


def plan_json(run_results: Path, manifest_path: Path | None, mappings: Path | None) -> Any:
    invocation = load_run_results(run_results)
    manifest = load_manifest(manifest_path) if manifest_path else None
    plan = make_plan(invocation, load_mappings(mappings, manifest), manifest, environ={})
    # A disabled project's reason names the mapping file: relative, so the checkout's place
    # does not matter.
    text = json.dumps(plan.to_json()).replace(f"{REPO_ROOT}/", "")
    return json.loads(text)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_plan_is_the_golden_one(case: str) -> None:
    golden = json.loads((GOLDEN / f"{case}.json").read_text(encoding="utf-8"))
    assert plan_json(*CASES[case]) == golden


def test_every_golden_file_has_its_case() -> None:
    """A golden file left behind by a removed fixture would be checked by nothing."""
    recorded = {path.stem for path in GOLDEN.glob("*.json")}
    assert recorded == set(CASES)


def record() -> None:
    for case, inputs in CASES.items():
        text = json.dumps(plan_json(*inputs), indent=1, sort_keys=True, ensure_ascii=False)
        (GOLDEN / f"{case}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    record()
