"""Database drivers (and the client libraries they load) work in the image."""

from __future__ import annotations

import importlib
from importlib import metadata

import pytest


def installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def require_provider(provider: str):
    if not installed(f"apache-airflow-providers-{provider}"):
        pytest.skip(f"apache-airflow-providers-{provider} is not installed")


def test_sqlite3():
    import sqlite3

    assert sqlite3.connect(":memory:").execute("select 1").fetchone() == (1,)


def test_psycopg2():
    require_provider("postgres")
    import psycopg2
    import psycopg2.extensions

    assert psycopg2.extensions.libpq_version() > 0


def test_psycopg3():
    require_provider("postgres")
    if not installed("psycopg"):
        pytest.skip("psycopg (3) is not installed")
    import psycopg

    assert psycopg.pq.version() > 0


def test_asyncpg():
    require_provider("postgres")
    if not installed("asyncpg"):
        pytest.skip("asyncpg is not installed")
    importlib.import_module("asyncpg")


def test_mysqlclient():
    require_provider("mysql")
    import MySQLdb
    import MySQLdb._mysql

    # Loads libmariadb/libmysqlclient: fails when the runtime library is missing.
    assert MySQLdb._mysql.get_client_info()


def test_mysql_connector():
    require_provider("mysql")
    if not installed("mysql-connector-python"):
        pytest.skip("mysql-connector-python is not installed")
    importlib.import_module("mysql.connector")


def test_sqlalchemy_dialects_load():
    from sqlalchemy.engine import make_url

    urls = ["sqlite://"]
    if installed("apache-airflow-providers-postgres"):
        urls.append("postgresql+psycopg2://u:p@localhost/db")
    if installed("apache-airflow-providers-mysql"):
        urls.append("mysql+mysqldb://u:p@localhost/db")
    for url in urls:
        dialect = make_url(url).get_dialect()
        # SQLAlchemy 2: import_dbapi(); 1.4: dbapi(). Either imports the driver module.
        import_dbapi = getattr(dialect, "import_dbapi", None) or dialect.dbapi
        assert import_dbapi() is not None, url
