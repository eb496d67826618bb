"""Settings of the fog pipeline, read from the environment (see README).

With no environment at all this is the embedded default: every role on one
machine, SQLite under var/, the local Kafka and Redis that `make services`
starts. Cross-setting mistakes are system checks in fogsite/checks.py.
"""

from pathlib import Path

from fogsite.env import (
    CLUSTER_SCHEMES,
    TOPIC_EXPECTED,
    TOPIC_RE,
    ensure_folder,
    env_bool,
    env_choice,
    env_database,
    env_endpoints,
    env_float,
    env_host,
    env_hostport,
    env_int,
    env_list,
    env_match,
    env_port,
    env_redis_url,
    env_str,
    env_timezone,
)
from cloud_app.keys import DEFAULT_PREFIX, PREFIX_EXPECTED as KEY_PREFIX_EXPECTED, PREFIX_RE as KEY_PREFIX_RE
from edge_app import kafka_source
from fogwire import limits
from fogwire.protocol import EDGE_ID_EXPECTED, EDGE_ID_RE

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FOG_VAR_DIR", str(BASE_DIR / "var")))
POSTGRES_CONNECT_TIMEOUT_S = 10  # an edge database on PostgreSQL: see DATABASES
# An edge database on SQLite copies its WAL into the database file (a checkpoint, with an fsync of each) once the
# WAL holds this many pages; SQLite's own default is 1000. Each window the ingest stores goes into its household's
# run of the unique (household, window_start) index, a page a household, so at 1000 an edge of many households
# checkpointed every few dozen milliseconds, in the commit that crossed the mark (the ingest's, mostly), each time
# writing index pages again that the next commits dirty once more. At 16384 (64 MiB of WAL at SQLite's 4 KiB
# pages) a checkpoint writes each page once for many rows (`bench store --checkpoint` measures the two). The WAL
# file is cut back to twice that after a checkpoint (journal_size_limit), not left at its largest: not to that
# size itself, which the commit that crosses the mark always passes, so every cycle would grow the file anew. With
# synchronous=NORMAL a commit is fsynced at the next checkpoint: a power cut can take back more of the last
# commits than at 1000, which the edge reads again from Kafka (positions are committed with them) and the cloud
# takes once.
SQLITE_CHECKPOINT_PAGES = 16384
SQLITE_PAGE_BYTES = 4096  # SQLite's default page size, which the edge database keeps

# A fixed development key keeps `manage.py` usable with no environment;
# `check --deploy` flags it (Django's security.W009: a "django-insecure-" key),
# and docker-compose.yml requires DJANGO_SECRET_KEY.
DEV_SECRET_KEY = "django-insecure-fog-pipeline-development-key-do-not-deploy"
SECRET_KEY = env_str("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# --- the pipeline ---------------------------------------------------------
# Which side this host's web process serves. An edge host serves the admin, the edge's health page
# and metrics; a cloud host the dashboard, API, websocket and the cloud's metrics. Neither opens
# the other's store, so the two can run on machines that cannot reach each other's.
FOG_ROLES = ("ALL", "EDGE", "CLOUD")
FOG_ROLE = env_choice("FOG_ROLE", "all", FOG_ROLES).lower()
FOG_SERVES_EDGE = FOG_ROLE in ("all", "edge")
FOG_SERVES_CLOUD = FOG_ROLE in ("all", "cloud")
FOG_KAFKA_BOOTSTRAP = env_hostport("FOG_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
FOG_TOPIC = env_match("FOG_TOPIC", "power", TOPIC_RE, TOPIC_EXPECTED)
# The edge ingest's Kafka client (edge_app/kafka_source.py); `bench ingest` measures both.
FOG_EDGE_KAFKA_CLIENT = env_choice("FOG_EDGE_KAFKA_CLIENT", kafka_source.DEFAULT_CLIENT, list(kafka_source.SOURCES),
                                   fold=str.lower)
FOG_EDGE_REDIS_URL = env_redis_url("FOG_EDGE_REDIS_URL", "redis://127.0.0.1:6379/0")
FOG_CLOUD_REDIS_URL = env_redis_url("FOG_CLOUD_REDIS_URL", "redis://127.0.0.1:6379/1", cluster=True)
# The channel layer (channels-redis) needs a plain Redis: the cloud's own, or on a cluster the local one.
FOG_CHANNEL_REDIS_URL = env_redis_url(
    "FOG_CHANNEL_REDIS_URL", "redis://127.0.0.1:6379/2" if FOG_CLOUD_REDIS_URL.split(":", 1)[0] in CLUSTER_SCHEMES
    else FOG_CLOUD_REDIS_URL)
FOG_EDGE_ID = env_match("FOG_EDGE_ID", "edge-1", EDGE_ID_RE, EDGE_ID_EXPECTED)
DEV_EDGE_SECRET = "dev-edge-secret-change-me"
FOG_EDGE_SECRET = env_str("FOG_EDGE_SECRET", DEV_EDGE_SECRET)
# The cloud's view: which edges may deliver, as id:secret pairs. By default
# the one embedded edge, so the single-machine pipeline works out of the box.
FOG_EDGE_SECRETS = env_str("FOG_EDGE_SECRETS", f"{FOG_EDGE_ID}:{FOG_EDGE_SECRET}")
# ... or one pair a line in a file (keeps secrets out of the environment).
FOG_EDGE_SECRETS_FILE = env_str("FOG_EDGE_SECRETS_FILE", "")
# Every cloud key starts with this, so several clouds (or tests) can share a Redis.
FOG_CLOUD_KEY_PREFIX = env_match("FOG_CLOUD_KEY_PREFIX", DEFAULT_PREFIX, KEY_PREFIX_RE, KEY_PREFIX_EXPECTED)
# How many households one edge may bring to the cloud (the first edge to deliver a household owns it).
FOG_CLOUD_HOUSEHOLDS_PER_EDGE = env_int("FOG_CLOUD_HOUSEHOLDS_PER_EDGE", limits.DEFAULT_HOUSEHOLDS_PER_EDGE, minimum=1)
FOG_CLOUD_BIND = env_host("FOG_CLOUD_BIND", "127.0.0.1")
FOG_HEARTBEAT_PORT = env_port("FOG_HEARTBEAT_PORT", 63270)
FOG_DATA_PORT = env_port("FOG_DATA_PORT", 63271)
# The cloud replicas the edge dials: `host` (the ports above) or `host:heartbeat_port:data_port`, comma-separated.
FOG_CLOUD_ENDPOINTS = env_endpoints("FOG_CLOUD_HOST", "127.0.0.1", (FOG_HEARTBEAT_PORT, FOG_DATA_PORT),
                                    ("heartbeat_port", "data_port"))
FOG_WINDOW_SECONDS = env_int("FOG_WINDOW_SECONDS", 5, minimum=1, maximum=limits.MAX_WINDOW_MS // 1000)
# At most the longest window: the window book keeps its times as C integers of milliseconds (edge_app/windows.pxd),
# which a grace of 10^16 s wrapped around.
FOG_GRACE_SECONDS = env_float("FOG_GRACE_SECONDS", 2.0, minimum=0, maximum=limits.MAX_WINDOW_MS // 1000)
FOG_LIVE_GRACE_SECONDS = env_float("FOG_LIVE_GRACE_SECONDS", 1.0, minimum=0, maximum=limits.MAX_WINDOW_MS // 1000)
# Live streams' windows close by the edge's clock at end + grace (edge_app/windows.py); off: event time only.
FOG_LIVE_WINDOWS = env_bool("FOG_LIVE_WINDOWS", True)
# Each household's windows start at a phase of its own, so they do not all end at once (edge_app/windows.py);
# off, every window starts at a multiple of its length since the epoch, as users of windows expect.
FOG_WINDOW_STAGGER = env_bool("FOG_WINDOW_STAGGER", False)
# The long-running loops' full garbage collections, at most this often, where the loop pauses
# (fogwire/fullgc.py); 0: CPython's own rule, in the middle of whatever the loop does.
FOG_FULL_GC_SECONDS = env_int("FOG_FULL_GC_SECONDS", 60, minimum=0)
FOG_EDGE_RETENTION_DAYS = env_int("FOG_EDGE_RETENTION_DAYS", 7, minimum=1)
# Long outages (edge_app/budget.py): the backlog the edge holds before it stops reading Kafka
# (0: derived from free disk space when the ingest starts), where it reads again, and how close
# Kafka's retention may come to unread data before a warning.
FOG_EDGE_BUDGET_TUPLES = env_int("FOG_EDGE_BUDGET_TUPLES", 0, minimum=0)
FOG_EDGE_BUDGET_LOW_WATER_PERCENT = env_int("FOG_EDGE_BUDGET_LOW_WATER_PERCENT", 80, minimum=1, maximum=99)
FOG_EDGE_RETENTION_MARGIN_HOURS = env_float("FOG_EDGE_RETENTION_MARGIN_HOURS", 6.0, minimum=0)
FOG_PRICE_EUR_PER_KWH = env_float("FOG_PRICE_EUR_PER_KWH", 0.30, minimum=0)
# TLS on the link (docs/SECURITY.md). The cloud speaks tls+tcp when it has a
# certificate, an edge when it has the CA to verify the cloud with.
FOG_TLS_CA = env_str("FOG_TLS_CA", "")
FOG_CLOUD_TLS_CERT = env_str("FOG_CLOUD_TLS_CERT", "")
FOG_EDGE_TLS_CERT = env_str("FOG_EDGE_TLS_CERT", "")
FOG_TLS_MUTUAL = env_bool("FOG_TLS_MUTUAL", False)
# One name for every replica's certificate (nng sets it per socket); by default the first listed host.
FOG_TLS_SERVER_NAME = env_host("FOG_TLS_SERVER_NAME", FOG_CLOUD_ENDPOINTS[0][0])
FOG_CLOUD_MAX_CONNECTIONS = env_int("FOG_CLOUD_MAX_CONNECTIONS", 64, minimum=1, maximum=100_000)

# --- Django ---------------------------------------------------------------
INSTALLED_APPS = [
    "fogsite",  # first: its runserver (Daphne's, for websockets) wins over staticfiles' (fogsite/management)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served locally (no CDN)
    "channels",
    "django_rq",
    "edge_app",
    "cloud_app",
    "simulation",
]
# The developer's tools (local services, benchmarks, the fault harness and their commands).
# A deployment leaves them out with FOG_TOOLING=off; nothing in the product imports them.
FOG_TOOLING = env_bool("FOG_TOOLING", True)
if FOG_TOOLING:
    INSTALLED_APPS.append("tooling")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fogsite.urls"
WSGI_APPLICATION = "fogsite.wsgi.application"
ASGI_APPLICATION = "fogsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("FOG_DATABASE_URL", f"sqlite:///{VAR_DIR / 'edge.sqlite3'}", conn_max_age=600)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite can't create the folder of its file: make it here, so `migrate`
    # works before `make` ever ran, or name the setting that put it there.
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        _folder = Path(DATABASES["default"]["NAME"]).parent
        if _folder == VAR_DIR:
            ensure_folder(_folder, "FOG_VAR_DIR", str(VAR_DIR))
        else:
            ensure_folder(_folder, "FOG_DATABASE_URL", env_str("FOG_DATABASE_URL", ""))
    # WAL lets the ingest and sender workers write while the admin reads;
    # the busy timeout makes a writer wait for the lock instead of failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": ("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                         f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_PAGES}; "
                         f"PRAGMA journal_size_limit={2 * SQLITE_CHECKPOINT_PAGES * SQLITE_PAGE_BYTES};"),
    }

elif DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql"):
    # A database host that drops packets holds a connect for TCP's own timeout (minutes) otherwise: every loop's
    # outage handling, and runedge's stop, would wait that long (?connect_timeout= in the URL overrides it).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", POSTGRES_CONNECT_TIMEOUT_S)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
# The operator's zone: the admin shows times in it (UTC on hover); stored times stay UTC.
TIME_ZONE = env_timezone("FOG_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Chart.js and the map come from the npm registry (package.json) and is served from
# here, never from a CDN.
# WhiteNoise serves straight from the finders, so the ASGI server needs no
# collectstatic step and no DEBUG to serve the page's scripts.
WHITENOISE_USE_FINDERS = True
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/chartjs", BASE_DIR / "node_modules" / "chart.js" / "dist"),
    # Germany's state boundaries (CC BY 4.0, credited on the page), also from npm.
    ("vendor/svg-maps-germany", BASE_DIR / "node_modules" / "@svg-maps" / "germany"),
]

# channels-redis waits for a message with a 5 s blocking pop; redis-py 8's
# default 5 s read timeout lost that race whenever nothing was published, and
# every idle dashboard socket was closed with 1011 (django/channels_redis#422,
# redis/redis-py#4091). A read timeout well above the pop still notices a
# Redis that stopped answering.
CHANNEL_LAYER_SOCKET_TIMEOUT = 30
# channels-redis drops a group member not added again within this; its default, a day, let every dashboard
# socket that died without leaving be sent every update for a day. Live sockets add themselves again several
# times within it (cloud_app.consumers.RENEWALS_PER_EXPIRY).
CHANNEL_GROUP_EXPIRY = 300
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "fogsite.channel_layer.CancellableRedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": FOG_CHANNEL_REDIS_URL, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT}],
            "prefix": f"{FOG_CLOUD_KEY_PREFIX}asgi",
            "group_expiry": CHANNEL_GROUP_EXPIRY,
        },
    }
}

RQ_QUEUES = {
    "edge": {"URL": FOG_EDGE_REDIS_URL, "DEFAULT_TIMEOUT": -1},
    # Each edge's loops have a queue of their own (edge_app.control.queue_name), so edges sharing one
    # Redis never run each other's jobs; listed here so `manage.py rqworker edge:<FOG_EDGE_ID>` finds it.
    f"edge:{FOG_EDGE_ID}": {"URL": FOG_EDGE_REDIS_URL, "DEFAULT_TIMEOUT": -1},
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "URL_FORMAT_OVERRIDE": None,  # no ?format=: a query string the schema does not name is ignored, never a 404
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Fog pipeline API",
    "DESCRIPTION": "Read-only figures of the cloud node: per German state, households, edges, recent tuples.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOG_LEVEL = env_choice("FOG_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Third-party libraries' repeats (kafka-python's slow-task warnings) become one line a minute;
    # the pipeline's own `fog.*` lines always show (fogsite/lognoise.py).
    "filters": {"third_party_summary": {"()": "fogsite.lognoise.ThirdPartySummary"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain",
                             "filters": ["third_party_summary"]}},
    "loggers": {
        "fog": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        "kafka": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}
