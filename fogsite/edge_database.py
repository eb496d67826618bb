"""The edge database, checked before a command uses it: one line instead of a traceback.

runedge (every loop needs it) and reconcile (it reads the edge's windows) both
refuse a database that can't be reached or lacks migrations.
"""

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor


def describe(database):
    """The engine, the name and, for a server, where it is: `postgresql fog at db.example:5432`."""
    where = f"{database['ENGINE'].rsplit('.', 1)[-1]} {database['NAME']}"
    if database.get("HOST"):
        where += f" at {database['HOST']}" + (f":{database['PORT']}" if database.get("PORT") else "")
    return where


def check_edge_database():
    """CommandError, in one line, for an edge database that can't be reached or lacks migrations."""
    where = describe(settings.DATABASES["default"])
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        missing = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        reason = " ".join(str(exc).split())  # psycopg's hint comes on a line of its own
        raise CommandError(f"the edge database ({where}) can't be read: {reason}") from None
    if missing:
        raise CommandError(f"the edge database ({where}) lacks {len(missing)} migrations "
                           f"({missing[0][0].app_label}.{missing[0][0].name} first): run `python manage.py migrate`")
