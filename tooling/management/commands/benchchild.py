import json

from django.core.management import call_command
from django.core.management.base import BaseCommand

from tooling.bench import admin, edge, store, windows

CHILDREN = {"drain": edge.child_drain, "ingest": edge.child_ingest, "store": store.child_store,
            "windows": windows.child_windows, "admin": admin.child_admin}


class Command(BaseCommand):
    help = ("Internal: the measured half of `bench drain|ingest|store|windows|admin`, run in a child with a database of "
            "its own.")

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=sorted(CHILDREN))
        parser.add_argument("arguments", help="the benchmark's arguments as JSON")

    def handle(self, *args, kind, arguments, **options):
        call_command("migrate", verbosity=0)
        self.stdout.write(json.dumps(CHILDREN[kind](**json.loads(arguments))))
