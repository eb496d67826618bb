"""`make admin`: a local admin user with a generated password, printed once.

Never a fixed password: a demo's admin is still an admin of real data. The
password is made by `secrets`, stored only as Django's hash, and shown on
this one run; running it again gives the user a new one.
"""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from fogsite.checks import PIPELINE_CHECKS

PASSWORD_BYTES = 18  # 24 URL-safe characters


class Command(BaseCommand):
    requires_system_checks = PIPELINE_CHECKS
    help = ("Create a local Django admin user (staff and superuser) with a generated password and print the "
            "password once; if the user exists, give it a new generated password. For the demo's /admin/.")

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin", help="the admin's user name (default %(default)s)")

    def handle(self, *args, username, **options):
        if not username.strip():
            raise CommandError("--username must not be empty")
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        user, created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        verb = "created" if created else "existed; it has a new password"
        self.stdout.write(f"admin user {username!r} {verb}")
        self.stdout.write(f"password: {password}")
        self.stdout.write("(shown this once and stored only as a hash; run `make admin` again for a new one)")
