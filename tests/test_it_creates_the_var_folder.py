"""`migrate` works before `make` ever ran: the var folder is created when first needed (issue 18)."""

import sqlite3

from tests.conftest import run_manage


def test_it_creates_the_var_folder_on_the_first_migrate(tmp_path):
    var = tmp_path / "fresh" / "var"
    result = run_manage("migrate", "--noinput", "-v", "0", env={"FOG_VAR_DIR": str(var)})
    assert result.returncode == 0, result.stderr
    tables = sqlite3.connect(var / "edge.sqlite3").execute("select name from sqlite_master").fetchall()
    assert ("django_migrations",) in tables


def test_it_names_the_folder_and_the_setting_when_it_cannot_be_created(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_manage("migrate", "--noinput", env={"FOG_VAR_DIR": str(blocker / "var")})
    assert result.returncode == 2
    assert result.stderr == (f"FOG_VAR_DIR='{blocker / 'var'}': can't create the folder {blocker / 'var'} "
                             "(Not a directory)\n")
