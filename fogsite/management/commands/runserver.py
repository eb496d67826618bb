"""`manage.py runserver`: Daphne's ASGI development server (HTTP and the dashboard's websockets), as Channels
advises. It is fogsite's command rather than the `daphne` app's because that app imports Daphne and Twisted
into every process at start, the edge's workers, the cloud and the simulation too, which never serve HTTP;
here only this command loads them. fogsite comes before django.contrib.staticfiles in INSTALLED_APPS so
this command is the one Django runs (Daphne's serves the static files itself)."""

from daphne.management.commands.runserver import Command  # noqa: F401
