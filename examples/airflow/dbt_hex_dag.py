"""An Airflow DAG: dbt build, then the Hex apps that read what it refreshed.

Both tasks are BashOperators running the CLI, so Airflow needs neither dbt nor hexdbt in its own
environment: point BIN_DIR at a virtualenv that has them. The token comes from the Airflow
Variable ``hex_api_token`` (Airflow masks variables whose name contains "token" in logs and in
the rendered-template view).

Retries are safe, on any worker: hexdbt records every trigger in its ledger before calling Hex,
and the ledger and the rate budget live in PostgreSQL (``HEXDBT_STATE_URL``, from the Airflow
connection ``hexdbt_state``; Airflow's own metadata database will do, in a schema of hexdbt's
own). A retried ``hex_refresh`` on another worker re-attaches to the runs the first try started
instead of starting them again, and every task using the token draws from one budget. The worker
needs hexdbt with its ``postgres`` extra (README, "Install"); ``hexdbt state check`` tests the
connection.

``dbt_build`` writes its artifacts to ``TARGET_PATH`` on storage both tasks see, so the retried
``hex_refresh`` reads the same dbt invocation as its first try.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

DBT_PROJECT_DIR = "/opt/airflow/dbt"  # change: your dbt project
BIN_DIR = "/opt/airflow/venvs/dbt/bin"  # change: the virtualenv with dbt and hexdbt[postgres]
TARGET_PATH = "/opt/airflow/shared/dbt-target"  # change: storage every worker sees

with DAG(
    dag_id="dbt_build_and_hex_refresh",
    schedule="15 6 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dbt", "hex"],
) as dag:
    dbt_build = BashOperator(
        task_id="dbt_build",
        bash_command=f"{BIN_DIR}/dbt build",
        cwd=DBT_PROJECT_DIR,
        env={"DBT_PROFILES_DIR": DBT_PROJECT_DIR, "DBT_TARGET_PATH": TARGET_PATH},
        append_env=True,
    )

    hex_refresh = BashOperator(
        task_id="hex_refresh",
        bash_command=f"{BIN_DIR}/hexdbt run --report-junit target/hexdbt.xml",
        cwd=DBT_PROJECT_DIR,
        env={
            "HEX_API_TOKEN": "{{ var.value.hex_api_token }}",
            # postgres://user:password@host:5432/db; Airflow masks the password in its logs.
            "HEXDBT_STATE_URL": "{{ conn.hexdbt_state.get_uri() }}",
            "DBT_TARGET_PATH": TARGET_PATH,
        },
        append_env=True,
        # Also after a partial dbt failure: only apps whose models succeeded are triggered.
        trigger_rule="all_done",
        retries=2,
        retry_delay=timedelta(minutes=5),
        # Hex runs are waited on; hexdbt cancels its own runs past their timeout_minutes.
        execution_timeout=timedelta(hours=2),
    )

    dbt_build >> hex_refresh
