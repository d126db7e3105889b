"""Threadsite settings, read from environment variables (see .env.example).

The defaults are safe for local use: DEBUG is off, only 127.0.0.1 and localhost are
served, and the secret key is generated once and kept in the data directory.
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from threadsite import env

BASE_DIR = Path(__file__).resolve().parent.parent

# Everything Threadsite writes: the thread store, the auth database, the secret key.
DATA_DIR = env.ensure_dir(
    "THREADSITE_DATA_DIR",
    env.get_path("THREADSITE_DATA_DIR", default=Path("var"), base_dir=BASE_DIR),
)
THREADSITE_STORE_ROOT = DATA_DIR / "threads"

DEBUG = env.get_bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.get_optional_str("DJANGO_SECRET_KEY") or env.load_or_create_secret_key(
    DATA_DIR / "secret_key"
)
ALLOWED_HOSTS = env.get_list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    # First, so that its changepassword command is the one manage.py runs, not Django's.
    "threadsite",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "threadsite.auth_cache.AuthenticationMiddleware",  # Django's, remembering who is signed in
    # Every view needs a signed-in user unless marked @login_not_required (htmx requests
    # get HX-Redirect to the sign-in page instead of a redirect they would follow).
    "threadsite.middleware.SignInRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "threadsite.middleware.HtmxMiddleware",  # django-htmx's, answering request.htmx sooner
    "threadsite.middleware.StoreErrorMiddleware",
]

ROOT_URLCONF = "threadsite.urls"
WSGI_APPLICATION = "threadsite.wsgi.application"

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
                "threadsite.dashboard.permissions.roles",
            ],
        },
    },
]

# Django's own tables only (users, groups, sessions); threads live in the file store.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "auth.sqlite3",
        # Keep each server thread's connection instead of opening one per request (a
        # polled run page asks every second); checked before reuse.
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": True,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sign-in state without a database or file read per request (threadsite/auth_cache.py):
# sessions and users (with their roles) are kept in each server process until any session
# or account changes, which every change announces in AUTH_GENERATION_FILE. Sessions stay
# in the database, read through files in the data directory that every process shares.
# An open run page asks for its status every second.
AUTHENTICATION_BACKENDS = ["threadsite.auth_cache.CachedModelBackend"]
SESSION_ENGINE = "threadsite.auth_cache"
SESSION_CACHE_ALIAS = "sessions"
THREADSITE_AUTH_GENERATION_FILE = DATA_DIR / "auth-generation"
# How long a change may go unnoticed when it bypassed Django (raw SQL, queryset updates).
THREADSITE_AUTH_CACHE_SECONDS = 60

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# Static files are served by WhiteNoise straight from the app and project directories,
# so there is no collectstatic step (and nothing to forget) before starting gunicorn.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True

# Behind a TLS-terminating proxy: secure cookies, HSTS and a redirect to HTTPS.
# gunicorn trusts X-Forwarded-Proto only from FORWARDED_ALLOW_IPS (127.0.0.1 by default).
THREADSITE_HTTPS = env.get_bool("THREADSITE_HTTPS", default=False)
if THREADSITE_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 60 * 60 * 24 * 365
    # Subdomains and the preload list are the domain owner's decision, not this app's.
    SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]
CSRF_COOKIE_HTTPONLY = True  # pages carry the token; scripts never read the cookie

# ------------------------------------------------------------------- the /v1 API
# The OpenAI-Assistants-compatible JSON API (threadsite/api; README, "The API").
THREADSITE_ASSISTANTS_ROOT = DATA_DIR / "assistants"
# Bearer keys: these, plus the hashed ones `manage.py apikey` keeps in the keys file.
THREADSITE_API_KEYS = env.get_list("THREADSITE_API_KEYS", default=[])
THREADSITE_API_KEYS_FILE = DATA_DIR / "api_keys"


def _count(name: str, default: int, *, minimum: int = 1) -> int:
    value = env.get_str(name, default=str(default))
    if not (value.isascii() and value.isdigit() and int(value) >= minimum):
        raise ImproperlyConfigured(
            f"{name} must be a whole number of at least {minimum}, got {value!r}."
        )
    return int(value)


# Event streams one server process holds at once. By default half its threads (which
# gunicorn.conf.py passes as THREADSITE_WEB_THREADS), so pages keep the other half.
THREADSITE_API_MAX_STREAMS = _count(
    "THREADSITE_API_MAX_STREAMS", max(1, _count("THREADSITE_WEB_THREADS", 8) // 2)
)

# Run pages an open tab polls every second: each process keeps the live block it last sent
# for this many runs, and sends it again while the run has not changed (0: render every
# answer). threadsite/dashboard/runs.py, LiveBlocks.
THREADSITE_LIVE_BLOCKS = _count("THREADSITE_LIVE_BLOCKS", 512, minimum=0)

# Errors go to stderr (gunicorn's log) instead of e-mail.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # gunicorn writes the access log; skip Django's duplicate 4xx warnings.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "ERROR"},
    },
}

# ------------------------------------------- security headers and sign-in limits
# (threadsite/security.py; README, "Operating Threadsite")
# A Content-Security-Policy on every response, static files included (hence before
# WhiteNoise); a limit on sign-in attempts, counted in files under the data directory so
# that all server processes share one count.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "threadsite.security.ContentSecurityPolicyMiddleware",
)
MIDDLEWARE.append("threadsite.security.LoginRateLimitMiddleware")
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "login_attempts": {
        "BACKEND": "threadsite.caches.SharedFileCache",
        "LOCATION": DATA_DIR / "login-attempts",
    },
    # The database keeps every session; these files only spare it the reads. Past
    # MAX_ENTRIES, a third of them are dropped and read back from the database on use.
    "sessions": {
        "BACKEND": "threadsite.caches.SharedFileCache",
        "LOCATION": DATA_DIR / "sessions",
        "OPTIONS": {"MAX_ENTRIES": 10_000},
    },
}
THREADSITE_LOGIN_MAX_ATTEMPTS = 5  # sign-ins that do not succeed, per username and address
THREADSITE_LOGIN_WINDOW_SECONDS = 15 * 60
