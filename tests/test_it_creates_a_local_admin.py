"""`make admin` (manage.py localadmin): a local admin with a generated password that logs in (issue 18)."""

import io

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def _localadmin(*args):
    out = io.StringIO()
    call_command("localadmin", *args, stdout=out)
    text = out.getvalue()
    return text, next(line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("password: "))


def _log_in(client, username, password):
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_it_creates_an_admin_who_can_log_in_with_the_printed_password(client):
    text, password = _localadmin()
    assert "admin user 'admin' created" in text
    assert _log_in(client, "admin", password)
    assert "Site administration" in client.get("/admin/").content.decode()


def test_it_never_uses_the_same_password_twice_and_retires_the_old_one(client):
    _, first = _localadmin("--username", "ops")
    text, second = _localadmin("--username", "ops")
    assert "existed; it has a new password" in text
    assert first != second and len(second) >= 20
    assert not _log_in(client, "ops", first)
    assert _log_in(client, "ops", second)
