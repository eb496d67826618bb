"""System checks for settings that are wrong only in combination.

Each single value is already validated where it is read (fogsite.env);
these catch the mistakes that span several, with one clear message each.
"""

import os
import shutil
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from redis.connection import parse_url

from cloud_app.engine import LOCAL_CLUSTER_MASTERS, is_cluster, node_url
from cloud_app.secrets import EMPTY, MALFORMED, REPEATED, UNREADABLE, read_edge_secrets, weak_secrets
from edge_app import compiled
from edge_app.budget import BYTES_PER_TUPLE, budget_folder
from fogsite.certdates import EXPIRY_WARNING_DAYS, TLS_FILE_SETTINGS, setting_problem
from fogsite.env import is_loopback

# The checks a command that shows no page runs as it starts (the nodes, reconcile, chaos, services, localadmin):
# ours (compatibility) and Django's that concern it, not the admin's, the templates', the URLs' or the static
# files'. Those import every view and template tag library, and through Django REST framework every optional
# package it finds installed: most of the CPU such a start spends on its checks, which the edge's restarts after a
# crash wait for. `manage.py check`, `migrate`, `runserver` and `bench` (which times pages) run them all.
PIPELINE_CHECKS = [Tags.caches, Tags.compatibility, Tags.database, Tags.files, Tags.models, Tags.security,
                   Tags.signals, Tags.translation]
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]", "ip6-localhost"}
# The edge secrets' problems (cloud_app/secrets.py): a check id and a hint each.
SECRETS_CHECKS = {UNREADABLE: "fog.E006", MALFORMED: "fog.E003", REPEATED: "fog.E007", EMPTY: "fog.E008"}
SECRETS_HINTS = {
    UNREADABLE: "One id:secret pair a line, in UTF-8, readable by the user who runs the cloud.",
    MALFORMED: "Write it as edge-1:secret1,edge-2:secret2 (in a file, one pair a line).",
    REPEATED: "Give each edge one entry: only one of the secrets would count.",
    EMPTY: "List each edge that delivers to this cloud as id:secret.",
}


def redis_target(url):
    """What a Redis URL points at, normalised: (host or socket path, port, db).

    redis-py's own URL parser fills in what the URL leaves out (port 6379,
    db 0, `?db=` queries); every loopback name is one host, so
    `redis://localhost:6379/20` and `redis://127.0.0.1/20` compare equal.
    """
    kwargs = parse_url(node_url(url))
    if "path" in kwargs:
        return ("unix", os.path.realpath(kwargs["path"]), int(kwargs.get("db", 0)))
    host = kwargs.get("host", "localhost").lower()
    return ("loopback" if host in LOOPBACK or host.startswith("127.") else host,
            int(kwargs.get("port", 6379)), int(kwargs.get("db", 0)))


def shares_cloud_store(url, cloud):
    """Whether the Redis at `url` is (a node of) the cloud store at `cloud`. A cluster URL names one node; on
    loopback the local cluster's other masters are on the next ports, and a cluster node has only db 0."""
    target = redis_target(url)
    if not is_cluster(cloud):
        return target == redis_target(cloud)
    host, port, _ = redis_target(cloud)
    ports = range(port, port + LOCAL_CLUSTER_MASTERS) if host == "loopback" else (port,)
    return target[0] == host and target[1] in ports


@register(Tags.compatibility)
def check_pipeline_settings(app_configs, **kwargs):
    errors = []
    if settings.FOG_HEARTBEAT_PORT == settings.FOG_DATA_PORT:
        errors.append(
            Error(
                f"FOG_HEARTBEAT_PORT and FOG_DATA_PORT are both {settings.FOG_DATA_PORT}.",
                hint="The cloud binds two sockets; give them different ports (defaults 63270 and 63271).",
                id="fog.E001",
            )
        )
    # Only a host running both sides uses both Redis URLs (FOG_ROLE=all).
    if settings.FOG_ROLE == "all" and shares_cloud_store(settings.FOG_EDGE_REDIS_URL, settings.FOG_CLOUD_REDIS_URL):
        errors.append(
            Error(
                "FOG_EDGE_REDIS_URL and FOG_CLOUD_REDIS_URL name the same Redis database (or a node of its cluster).",
                hint="The edge's job queue and the cloud's tuple store must not share a database "
                "(defaults: db 0 and db 1); a FLUSHDB on one would wipe the other.",
                id="fog.E002",
            )
        )
    errors += _check_channel_layer()
    pairs, problems = read_edge_secrets(settings.FOG_EDGE_SECRETS, settings.FOG_EDGE_SECRETS_FILE)
    errors += [Error(problem.message, hint=SECRETS_HINTS[problem.kind], id=SECRETS_CHECKS[problem.kind])
               for problem in problems]
    if settings.FOG_GRACE_SECONDS >= 10 * settings.FOG_WINDOW_SECONDS:
        errors.append(
            Warning(
                f"FOG_GRACE_SECONDS={settings.FOG_GRACE_SECONDS} is ten windows or more.",
                hint="Every open window holds its readings in memory and its Kafka offsets uncommitted.",
                id="fog.W001",
            )
        )
    if settings.FOG_LIVE_GRACE_SECONDS > settings.FOG_GRACE_SECONDS:
        errors.append(
            Warning(
                f"FOG_LIVE_GRACE_SECONDS={settings.FOG_LIVE_GRACE_SECONDS} is longer than "
                f"FOG_GRACE_SECONDS={settings.FOG_GRACE_SECONDS}.",
                hint="A window closes by event time at its end + FOG_GRACE_SECONDS whatever the live grace; "
                "live windows use the shorter of the two.",
                id="fog.W004",
            )
        )
    errors += _check_budget()
    if settings.FOG_SERVES_EDGE:
        errors += _check_window_book()
    return errors + _link_security(pairs)


def _check_window_book():
    """The compiled window book (edge_app/compiled.py): stale, it runs instead of the windows.py beside it."""
    kind, said = compiled.state()
    if kind == compiled.STALE:
        return [Error(f"{said}.", hint="The nodes run no window book but the one in edge_app/windows.py.", id="fog.E030")]
    if kind == compiled.PURE:
        return [Warning(f"{said}.", hint="The edge works the same either way; `bench windows` measures the two.",
                        id="fog.W030")]
    return []


def _link_security(pairs):
    """Secrets and TLS: reported by every `check`, since runcloud refuses the same mistakes at start."""
    errors = []
    public = not is_loopback(settings.FOG_CLOUD_BIND)
    weak = weak_secrets(pairs, settings.DEV_EDGE_SECRET)
    if public and weak:
        errors.append(
            Error(
                f"The cloud binds to {settings.FOG_CLOUD_BIND}, beyond loopback, with weak edge secrets: "
                f"{', '.join(weak)}.",
                hint="Anyone who can reach the port could guess them, and an edge that shares its secret can "
                "deliver as the other; give each edge a random secret of its own "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))'). runcloud refuses to start.",
                id="fog.E010",
            )
        )
    if public and not settings.FOG_CLOUD_TLS_CERT:
        errors.append(
            Warning(
                f"The cloud binds to {settings.FOG_CLOUD_BIND}, beyond loopback, without TLS.",
                hint="Household power readings would cross the network in clear text; set FOG_CLOUD_TLS_CERT "
                "and FOG_TLS_CA (manage.py makecerts). runcloud refuses unless --insecure-plaintext.",
                id="fog.W010",
            )
        )
    for name in ("FOG_TLS_CA", "FOG_CLOUD_TLS_CERT", "FOG_EDGE_TLS_CERT"):
        path = getattr(settings, name)
        if path and not Path(path).is_file():
            errors.append(Error(f"{name}={path}: no such file.", hint="manage.py makecerts writes them.",
                                id="fog.E011"))
    errors += _check_certificate_dates()
    if settings.FOG_TLS_MUTUAL and not settings.FOG_TLS_CA:
        errors.append(Error("FOG_TLS_MUTUAL is on but FOG_TLS_CA is not set.",
                            hint="The cloud needs the CA that signed the edges' certificates.", id="fog.E012"))
    if settings.FOG_EDGE_TLS_CERT and not settings.FOG_TLS_CA:
        errors.append(Error("FOG_EDGE_TLS_CERT is set but FOG_TLS_CA is not: the edge would not use TLS.",
                            hint="Set FOG_TLS_CA to the CA that signed the cloud's certificate.", id="fog.E013"))
    remote = sorted({host for host, *_ in settings.FOG_CLOUD_ENDPOINTS if not is_loopback(host)})
    if remote and not settings.FOG_TLS_CA:
        errors.append(Warning(f"The edge dials the cloud at {', '.join(remote)}, beyond loopback, without TLS.",
                              hint="Household power readings would cross the network in clear text; set FOG_TLS_CA "
                              "to the CA of the cloud's certificate. runedge refuses unless --insecure-plaintext.",
                              id="fog.W011"))
    secrets_file = settings.FOG_EDGE_SECRETS_FILE
    try:
        mode = os.stat(secrets_file).st_mode & 0o777 if secrets_file else 0
    except OSError:
        mode = 0  # fog.E006 says it can't be read
    if mode & 0o077:
        errors.append(Warning(f"FOG_EDGE_SECRETS_FILE={secrets_file} can be read by other users of this host "
                              f"(mode {mode:04o}).",
                              hint=f"Anyone who reads it can deliver as any edge: chmod 600 {secrets_file}.",
                              id="fog.W012"))
    return errors


def _check_certificate_dates():
    """Nothing else notices a certificate out of date before the handshakes fail (fogsite/certdates.py)."""
    errors = []
    for name in TLS_FILE_SETTINGS:
        problem = setting_problem(name)
        if problem and problem[0]:
            errors.append(Error(f"{problem[1]}.", id="fog.E014",
                                hint="Every TLS handshake that checks it fails, and the other side can't say why. "
                                "Renew it (the development CA's: manage.py makecerts, which keeps the CA; --force if the "
                                "CA itself is out of date) and restart; "
                                "one not yet valid may instead mean a wrong clock, here or where it was signed. "
                                "runcloud refuses to start with it; runedge starts, stores windows and says so."))
        elif problem:
            errors.append(Warning(f"{problem[1]}.", id="fog.W013",
                                  hint=f"Renew it before then (a warning from {EXPIRY_WARNING_DAYS} days before): "
                                  "from that moment every TLS handshake that checks it fails."))
    return errors


def _check_channel_layer():
    """channels-redis speaks to one plain Redis: never a cluster node, never the edge's job queue."""
    channel, cloud = settings.FOG_CHANNEL_REDIS_URL, settings.FOG_CLOUD_REDIS_URL
    if is_cluster(channel):
        return [Error(f"FOG_CHANNEL_REDIS_URL={channel} names a Redis Cluster.",
                      hint="The channel layer (channels-redis) cannot run on a cluster; give it a plain Redis, "
                      "e.g. redis://127.0.0.1:6379/2.", id="fog.E020")]
    if is_cluster(cloud) and shares_cloud_store(channel, cloud):
        return [Error(f"FOG_CHANNEL_REDIS_URL={channel} is a node of the cloud's Redis Cluster ({cloud}).",
                      hint="The channel layer needs a plain Redis of its own beside the cluster "
                      "(default redis://127.0.0.1:6379/2).", id="fog.E021")]
    if settings.FOG_ROLE == "all" and redis_target(channel) == redis_target(settings.FOG_EDGE_REDIS_URL) != (
            redis_target(cloud)):  # the same database as the cloud's: fog.E002 says it already
        return [Error("FOG_CHANNEL_REDIS_URL and FOG_EDGE_REDIS_URL name the same Redis database.",
                      hint="The dashboard's channel layer and the edge's job queue must not share a database.",
                      id="fog.E022")]
    return []


def _check_budget():
    """A budget the database's disk can't hold would fail writes before the ingest ever pauses."""
    budget = settings.FOG_EDGE_BUDGET_TUPLES
    folder = budget_folder(settings.DATABASES["default"], settings.VAR_DIR)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return []  # the folder does not exist yet: migrate creates it
    if budget and budget * BYTES_PER_TUPLE > free:
        return [Warning(
            f"FOG_EDGE_BUDGET_TUPLES={budget} may need {budget * BYTES_PER_TUPLE // 2**20} MiB, more than the "
            f"{free // 2**20} MiB free in {folder}.",
            hint="Lower the budget (0 derives it from the free space) or give the edge database more disk.",
            id="fog.W003")]
    return []


@register(Tags.security, deploy=True)
def check_pipeline_secrets(app_configs, **kwargs):
    errors = []
    if settings.FOG_SERVES_EDGE and settings.FOG_EDGE_SECRET == settings.DEV_EDGE_SECRET:
        errors.append(
            Warning(
                "FOG_EDGE_SECRET is the development default.",
                hint="Set FOG_EDGE_SECRET (and the matching entry in FOG_EDGE_SECRETS on the cloud).",
                id="fog.W002",
            )
        )
    elif settings.FOG_SERVES_CLOUD:  # a cloud host has no edge secret of its own, but takes edges' (the default too)
        pairs, _ = read_edge_secrets(settings.FOG_EDGE_SECRETS, settings.FOG_EDGE_SECRETS_FILE)
        public = [edge for edge, secret in pairs.items() if secret == settings.DEV_EDGE_SECRET]
        if public:
            errors.append(
                Warning(
                    f"The cloud takes the development edge secret for edges {', '.join(public)}.",
                    hint="Give each edge a random secret in FOG_EDGE_SECRETS(_FILE) (and its FOG_EDGE_SECRET).",
                    id="fog.W002",
                )
            )
    return errors
