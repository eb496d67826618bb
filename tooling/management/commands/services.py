from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fogsite.checks import PIPELINE_CHECKS
from tooling.localservices import ServiceError, services


class Command(BaseCommand):
    requires_system_checks = PIPELINE_CHECKS
    help = (
        "Start, stop or show the local Kafka broker and Redis server under var/. "
        "Services whose address (FOG_KAFKA_BOOTSTRAP, FOG_*_REDIS_URL) is not on this machine are left alone."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action", choices=["up", "down", "status"],
            help="up: start what is not running and wait until it answers; down: stop what we started "
            "(by pid file); status: say what runs.",
        )

    def handle(self, *args, action, **options):
        def out(line):
            self.stdout.write(line)

        targets = services(settings, settings.BASE_DIR, settings.VAR_DIR)
        try:
            if action == "up":
                for service in targets:
                    service.up(out)
            elif action == "down":
                for service in reversed(targets):
                    service.down(out)
            else:
                for service in targets:
                    out(service.status())
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
