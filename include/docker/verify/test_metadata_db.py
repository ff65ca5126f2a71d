"""`airflow db migrate` on SQLite, then the DAG of dags/ parses and runs."""

from __future__ import annotations

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
    assert "image-verification-ok" in output or "success" in output.lower()


def test_dagbag_parses_the_dag():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.1
        from airflow.models.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(DAGS_DIR), include_examples=False)
    assert not dagbag.import_errors, dagbag.import_errors
    assert DAG_ID in dagbag.dag_ids
    dag = dagbag.dags[DAG_ID]
    assert {"produce", "double", "echo"} <= set(dag.task_ids)
