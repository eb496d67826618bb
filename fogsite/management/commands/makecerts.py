from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fogsite.certs import write_set


class Command(BaseCommand):
    help = (
        "Make a development certificate authority and TLS certificates for the cloud and edges "
        "(EC P-256, each key with its certificate in one PEM file). An existing CA in --dir is reused."
    )
    # It makes the certificates the checks would refuse as missing or out of date: it must run when they fail.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--dir", default=str(settings.VAR_DIR / "tls"),
                            help="folder to write ca.pem, ca-key.pem, cloud.pem and edge-<id>.pem to "
                            "(default %(default)s)")
        parser.add_argument("--cloud-name", action="append", default=[], metavar="NAME",
                            help="a host name or IP address the edges dial the cloud by (repeatable; the first "
                            "is the certificate's common name; default FOG_TLS_SERVER_NAME and 127.0.0.1)")
        parser.add_argument("--edge", action="append", default=[], metavar="EDGE_ID",
                            help="make a client certificate for this edge id, for mutual TLS (repeatable)")
        parser.add_argument("--no-cloud", action="store_true", help="make no cloud certificate (only edges')")
        parser.add_argument("--force", action="store_true",
                            help="make a new CA even if --dir holds one (certificates made before stop working)")

    def handle(self, *args, **options):
        names = options["cloud_name"] or list(dict.fromkeys([settings.FOG_TLS_SERVER_NAME, "127.0.0.1"]))
        try:
            written = write_set(options["dir"], [] if options["no_cloud"] else names, options["edge"],
                                force=options["force"])
        except (OSError, ValueError) as exc:
            raise CommandError(f"certificates not written to {options['dir']}: {exc}") from None
        for path in written:
            self.stdout.write(str(path))
