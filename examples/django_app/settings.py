"""Settings of the recipe: Django and onceq share one PostgreSQL database.

DJANGO_DATABASE_URL-style variables are kept simple here: the recipe reads the same
URL onceq uses (ONCEQ_URL), so both are on one database by construction.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ.get("ONCEQ_URL", "postgresql://postgres@127.0.0.1:5432/test"))

SECRET_KEY = "recipe-only"  # noqa: S105 - an example's settings
USE_TZ = True
INSTALLED_APPS: list[str] = []
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",  # psycopg 3, the driver onceq uses
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or ""),
    }
}
