#!/usr/bin/env python
"""Django's command-line utility for the fog pipeline.

A malformed setting (fogsite.env.SettingError) is a user's typo, not a bug:
it is printed as its one line and the command exits with status 2, for every
command, instead of a traceback ending in that line.
"""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fogsite.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from fogsite.env import SETTING_ERROR_STATUS, SettingError

    try:
        _ = settings.INSTALLED_APPS  # reads the environment once, before any command runs
    except SettingError as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(SETTING_ERROR_STATUS)
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
