"""`airflow db migrate` on SQLite, then the DAG of dags/ parses and runs."""

from __future__ import annotations

import inspect
import json

from conftest import DAGS_DIR, airflow_env

DAG_ID = "verify_image_dag"


def test_db_migrate_and_dags_test(run, airflow_bin, fresh_home):
    env = airflow_env(fresh_home)
    run([airflow_bin, "db", "migrate"], env=env, timeout=900)
    assert (fresh_home / "airflow.db").stat().st_size > 0
    run([airflow_bin, "db", "check"], env=env, timeout=300)
    # Runs every task of the DAG in-process (no scheduler, no executor).
    proc = run([airflow_bin, "dags", "test", DAG_ID, "2024-01-02"], env=env, timeout=900)
    output = proc.stdout + proc.stderr
    assert "image-verification-ok" in output, output[-3000:]
    runs = run([airflow_bin, "dags", "list-runs", DAG_ID, "--output", "json"], env=env, timeout=300)
    states = [r["state"] for r in json.loads(runs.stdout[runs.stdout.index("[") :])]
    assert states == ["success"], states


def test_dagbag_parses_the_dag():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag

    kwargs = {}
    if "include_examples" in inspect.signature(DagBag).parameters:  # removed in Airflow 3.1
        kwargs["include_examples"] = False
    dagbag = DagBag(dag_folder=str(DAGS_DIR), **kwargs)
    assert not dagbag.import_errors, dagbag.import_errors
    assert DAG_ID in dagbag.dag_ids
    dag = dagbag.dags[DAG_ID]
    assert {"produce", "double", "echo"} <= set(dag.task_ids)
