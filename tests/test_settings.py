import pytest

from openaudience.core.errors import ConfigError
from openaudience.core.settings import load_settings


def test_duckdb_is_the_default(tmp_path):
    s = load_settings({"OA_HOME": str(tmp_path)})
    assert s.target == "duckdb"
    assert s.duckdb_path == tmp_path / "warehouse.duckdb"


def test_dsn_is_split_into_pg_variables_and_never_shown():
    s = load_settings({"OA_TARGET": "postgres",
                       "OA_PG_DSN": "postgresql://ana:s%40cret@db.example:6543/cdp"})
    assert s.pg_env == {"PGHOST": "db.example", "PGPORT": "6543", "PGUSER": "ana",
                        "PGPASSWORD": "s@cret", "PGDATABASE": "cdp"}
    assert "s@cret" not in s.describe()
    assert s.describe() == "postgres ana@db.example:6543/cdp"


def test_unknown_target_names_the_choices():
    with pytest.raises(ConfigError, match="use one of: duckdb, postgres, spark"):
        load_settings({"OA_TARGET": "snowflake"})


def test_postgres_without_a_database_says_what_to_set():
    with pytest.raises(ConfigError, match="OA_PG_DSN"):
        load_settings({"OA_TARGET": "postgres"})


def test_dsn_with_a_wrong_scheme_is_refused():
    with pytest.raises(ConfigError, match="postgresql://"):
        load_settings({"OA_TARGET": "postgres", "OA_PG_DSN": "mysql://x@y/z"})


def test_settings_name_the_spark_variables(tmp_path):
    """A Spark target's variables are checked like the others: the message names the one that is wrong."""
    base = {"OA_TARGET": "spark", "OA_HOME": str(tmp_path)}
    for env, word in (({"SPARK_REMOTE": "http://x:1"}, "SPARK_REMOTE"),
                      ({"OA_SPARK_MASTER": "yarn"}, "OA_SPARK_MASTER"),
                      ({"OA_STATE_TARGET": "spark"}, "OA_STATE_TARGET"),
                      ({"OA_SPARK_DRIVER_MEMORY": "lots"}, "OA_SPARK_DRIVER_MEMORY")):
        with pytest.raises(ConfigError, match=word):
            load_settings({**base, **env})
