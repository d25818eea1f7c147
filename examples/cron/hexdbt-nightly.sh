#!/usr/bin/env bash
# Build the dbt project, then refresh the Hex apps that read what the build refreshed.
# Meant for cron (see crontab next to it); works the same by hand.
#
#   DBT_PROJECT_DIR   the dbt project (required)
#   BIN_DIR           folder holding dbt and hexdbt (cron's PATH is minimal: give it)
#   HEXDBT_ENV_FILE   file with HEX_API_TOKEN=... (chmod 600); default ~/.config/hexdbt/env
#   HEXDBT_REPORT     JUnit report path; default target/hexdbt.xml in the project
#   HEXDBT_LOCK       lock file, so that a slow night never overlaps the next one
# Extra arguments go to dbt build, e.g. `hexdbt-nightly.sh --select marts`.
#
# Exit code: dbt's when dbt failed and hexdbt did not, else hexdbt's (0 ok, 4 Hex refused,
# 5 a Hex run failed, 6 timed out; see docs/cli.md).
set -uo pipefail

: "${DBT_PROJECT_DIR:?set DBT_PROJECT_DIR to the dbt project folder}"
bin="${BIN_DIR:+$BIN_DIR/}"
env_file="${HEXDBT_ENV_FILE:-$HOME/.config/hexdbt/env}"
lock="${HEXDBT_LOCK:-${TMPDIR:-/tmp}/hexdbt-nightly.lock}"

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

if [ -f "$env_file" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$env_file"
    set +a
fi

exec 9>"$lock"
if ! flock -n 9; then
    log "the previous run still holds $lock: skipping this one"
    exit 0
fi

cd "$DBT_PROJECT_DIR" || exit 2

log "dbt build $*"
"${bin}dbt" build "$@"
dbt_status=$?

# Also after a partial failure: hexdbt triggers only the Hex projects whose models succeeded,
# and says for the others why not. Running it twice for one dbt invocation starts nothing twice.
log "hexdbt run"
"${bin}hexdbt" run --report-junit "${HEXDBT_REPORT:-target/hexdbt.xml}"
hex_status=$?

log "done: dbt exit $dbt_status, hexdbt exit $hex_status"
if [ "$hex_status" -eq 0 ] && [ "$dbt_status" -ne 0 ]; then
    exit "$dbt_status"
fi
exit "$hex_status"
