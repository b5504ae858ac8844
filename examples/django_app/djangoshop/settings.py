"""Settings of the example shop: the minimum Django needs, and the relay's two options."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-shop-only"  # an example: never deploy this value
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["djangoshop"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "djangoshop.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "shop.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# conversion_relay.contrib.django reads these; a key left out falls back to its environment
# variable (CONVERSION_RELAY_CONFIG, REDIS_URL).  "sandbox": the built-in configuration, whose
# destinations all point at the local vendor sandbox (conversion-relay sandbox).
CONVERSION_RELAY = {
    "CONFIG": os.environ.get("CONVERSION_RELAY_CONFIG", "sandbox"),
    "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
}
