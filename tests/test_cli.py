"""The `oa` command line end to end on the embedded warehouse, as a user runs it."""

from __future__ import annotations

import pytest

from tests.conftest import AS_OF, make_target


@pytest.fixture
def duck(tmp_path):
    return make_target("duckdb", tmp_path, None, "")


@pytest.mark.slow  # a dbt build
def test_demo_data_load_dir_build_and_status(duck, tmp_path):
    out = tmp_path / "demo"
    done = duck.oa("demo-data", "--users", "1500", "--days", "90", "--seed", "3",
                   "--end-date", "2026-06-30", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "behavior_events.parquet").exists()

    done = duck.oa("load-dir", str(out))
    assert done.returncode == 0, done.stderr
    assert "customers" in done.stdout and "1,500" in done.stdout

    done = duck.oa("build", "--as-of", AS_OF)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "dbt build passed" in done.stdout

    done = duck.oa("status")
    assert done.returncode == 0, done.stderr
    assert "user_tags" in done.stdout and "not built" not in done.stdout
    assert "people resolved from" in done.stdout


def test_user_errors_are_one_line_without_a_traceback(duck, tmp_path):
    cases = [
        (("load", "customers", str(tmp_path / "missing.csv")), "no such file"),
        (("load", "clients", str(tmp_path)), "unknown raw table 'clients'"),
        (("build", "--as-of", "yesterday"), "--as-of must be a date"),
        (("demo-data", "--users", "0"), "--users and --days must be at least 1"),
    ]
    for args, message in cases:
        done = duck.oa(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_bad_target_is_reported_before_anything_runs(duck):
    duck.env["OA_TARGET"] = "oracle"
    done = duck.oa("status", script=True)  # the installed script itself, in a process of its own
    assert done.returncode == 2
    assert "OA_TARGET='oracle' is not a warehouse" in done.stderr


def test_ml_train_task_names_are_checked_before_any_training(tmp_path):
    from tests.support.hostile import run_main

    env = make_target("duckdb", tmp_path, None, "unused").env
    done = run_main(["ml", "train", "repurchase", "--task", "vip_flagship_preference"], env)
    assert done.returncode == 2 and "--task names recommendation tasks" in done.stderr, done.stderr
    done = run_main(["ml", "train", "recommend", "--task", "no_such_task"], env)
    assert done.returncode == 2 and "unknown task(s) 'no_such_task'; the tasks of ml/recommend.yml are" \
        in done.stderr, done.stderr
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()  # nothing was opened, let alone trained
