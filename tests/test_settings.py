"""Unit tests of conversion_relay.config.settings.load_settings: a TOML file plus an explicit environment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from conversion_relay import Relay
from conversion_relay.config.settings import Settings, load_settings
from conversion_relay.errors import ConfigurationError, RelayError
from conversion_relay.schemas.canonical import BEHAVIOUR_EVENT_NAMES
from conversion_relay.vendors.destination import DestinationSettings

SECRET = "sk-live-7f3e9a1c55d04b"

VALID = """\
[relay]
flush_deadline_seconds = 0.5
backoff_base_seconds = 2.0
key_prefix = "shop"

[destinations.gravity]
vendor = "gravity_capi"
base_url = "https://api.trygravity.example/"
api_key_env = "MY_KEY"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


LOCAL_REDIS = "redis://redis.test:6379/0"


def env_for(path: Path, **extra: str | None) -> dict[str, str]:
    """The environment for a file; an ``extra`` of None leaves that variable out."""
    env = {"CONVERSION_RELAY_CONFIG": str(path), "MY_KEY": SECRET, "REDIS_URL": LOCAL_REDIS, **extra}
    return {k: v for k, v in env.items() if v is not None}


def load_text(tmp_path: Path, text: str, **extra: str | None) -> Settings:
    return load_settings(env_for(write(tmp_path, text), **extra))


def config_error(tmp_path: Path, text: str, **extra: str) -> str:
    with pytest.raises(ConfigurationError) as info:
        load_text(tmp_path, text, **extra)
    return str(info.value)


# --- a valid file -----------------------------------------------------------------------------


def test_valid_file_gives_destination_with_key_from_environment_and_defaults(tmp_path):
    settings = load_text(tmp_path, VALID)

    assert list(settings.destinations) == ["gravity"]
    dest = settings.destination("gravity")
    assert isinstance(dest, DestinationSettings)
    assert dest == DestinationSettings(
        name="gravity",
        vendor="gravity_capi",
        base_url="https://api.trygravity.example",
        api_key=SECRET,
        api_key_env="MY_KEY",
        connect_timeout_seconds=3.05,
        read_timeout_seconds=10.0,
        max_events=1000,
        max_bytes=1_000_000,
        test_event_code=None,
        enabled=True,
        rate_limit_key="gravity_capi:" + hashlib.sha256(SECRET.encode()).hexdigest()[:12],
        skip_events=frozenset(BEHAVIOUR_EVENT_NAMES),
        options={},
    )
    assert dest.queue == "relay.gravity"
    assert dest.parallel_drains == 1 and dest.rate_limit_per_second == 0
    assert dest.request_timeout_seconds == pytest.approx(13.05)


def test_valid_file_relay_keys_are_applied_and_others_defaulted(tmp_path):
    settings = load_text(tmp_path, VALID)
    assert settings.flush_deadline_seconds == 0.5
    assert settings.backoff_base_seconds == 2.0
    assert settings.key_prefix == "shop"
    assert settings.backoff_cap_seconds == 600.0
    assert settings.lease_seconds == 5.0
    assert settings.probe_interval_seconds == 5.0
    assert settings.redis_url == LOCAL_REDIS
    assert settings.broker_url == settings.redis_url
    assert settings.secrets == [SECRET]
    assert [d.name for d in settings.enabled_destinations] == ["gravity"]


def test_destination_overrides_are_applied(tmp_path):
    text = (
        VALID
        + "max_events = 250\nmax_bytes = 50000\nread_timeout_seconds = 4.0\n"
        + 'test_event_code = "TEST1"\nenabled = false\n'
    )
    dest = load_text(tmp_path, text).destination("gravity")
    assert (dest.max_events, dest.max_bytes, dest.read_timeout_seconds) == (250, 50000, 4.0)
    assert dest.test_event_code == "TEST1"
    assert dest.enabled is False


def test_default_api_key_env_is_derived_from_destination_name(tmp_path):
    text = '[destinations.eu-shop]\nvendor = "gravity_capi"\n'
    settings = load_settings(
        {
            "CONVERSION_RELAY_CONFIG": str(write(tmp_path, text)),
            "CONVERSION_RELAY_EU_SHOP_API_KEY": SECRET,
            "REDIS_URL": LOCAL_REDIS,
        }
    )
    dest = settings.destination("eu-shop")
    assert dest.api_key_env == "CONVERSION_RELAY_EU_SHOP_API_KEY"
    assert dest.api_key == SECRET
    assert dest.base_url == "https://api.trygravity.ai"


def test_repr_of_settings_does_not_contain_the_key(tmp_path):
    settings = load_text(tmp_path, VALID)
    assert SECRET not in repr(settings)
    assert SECRET not in repr(settings.destination("gravity"))
    assert SECRET not in str(settings)
    assert "MY_KEY" in repr(settings)  # the variable's name is fine to show


def test_unconfigured_destination_lookup_names_configured_ones(tmp_path):
    settings = load_text(tmp_path, VALID)
    with pytest.raises(ConfigurationError, match=r"'meta' is not configured \(configured: gravity\)"):
        settings.destination("meta")


# --- errors name the bad key ------------------------------------------------------------------


def test_configuration_error_is_a_relay_error():
    assert issubclass(ConfigurationError, RelayError)


def test_misspelt_key_in_relay_is_named_with_the_key_it_is_closest_to(tmp_path):
    message = config_error(tmp_path, VALID.replace("[relay]\n", "[relay]\nflush_deadline = 2\n"))
    assert message == (
        "invalid configuration: relay.flush_deadline: Unknown key flush_deadline; did you mean flush_deadline_seconds?"
    )


def test_misspelt_key_in_destination_is_named_with_the_key_it_is_closest_to(tmp_path):
    message = config_error(tmp_path, VALID + "max_event = 500\n")
    assert message == (
        "invalid configuration: destinations.gravity.max_event: Unknown key max_event; did you mean max_events?"
    )


def test_misspelt_vendor_key_is_matched_against_that_vendors_keys(tmp_path):
    text = '[destinations.tracify]\nvendor = "tracify"\napi_key_env = "MY_KEY"\ncustomer_site = "x"\n'
    message = config_error(tmp_path, text)
    assert "destinations.tracify.customer_site: Unknown key customer_site; did you mean customer_site_id?" in message


def test_unknown_key_like_no_other_lists_the_keys_of_the_table(tmp_path):
    message = config_error(tmp_path, VALID + "colour = 1\n")
    assert message.startswith("invalid configuration: destinations.gravity.colour: Unknown key colour; a gravity_capi")
    assert "takes: api_key_env, base_url, connect_timeout_seconds," in message
    assert "api_key," not in message  # a refused key is never offered


def test_misspelt_table_is_named_with_the_table_it_is_closest_to(tmp_path):
    message = config_error(tmp_path, VALID.replace("[destinations.gravity]", "[destination.gravity]"))
    assert "destination: Unknown table destination; did you mean destinations?" in message


def test_unknown_table_is_named(tmp_path):
    message = config_error(tmp_path, VALID + "[worker]\nconcurrency = 4\n")
    assert "worker: Unknown table" in message


def test_unknown_vendor_lists_known_vendors(tmp_path):
    message = config_error(tmp_path, VALID.replace('"gravity_capi"', '"gravity"'))
    assert "destinations.gravity.vendor" in message
    assert "Unknown vendor 'gravity'" in message
    assert "use one of: gravity_capi" in message


def test_missing_vendor_is_reported(tmp_path):
    message = config_error(tmp_path, VALID.replace('vendor = "gravity_capi"\n', ""))
    assert "destinations.gravity.vendor" in message


def test_max_events_above_vendor_limit_is_refused(tmp_path):
    message = config_error(tmp_path, VALID + "max_events = 1001\n")
    assert message == (
        "invalid configuration: destinations.gravity.max_events: 1,001 is above the vendor's documented limit "
        "of 1,000 events per request; set max_events to 1,000 or less."
    )


def test_max_events_at_vendor_limit_is_accepted(tmp_path):
    assert load_text(tmp_path, VALID + "max_events = 1000\n").destination("gravity").max_events == 1000


def test_api_key_inline_in_file_is_refused_pointing_at_environment(tmp_path):
    message = config_error(tmp_path, VALID + f'api_key = "{SECRET}-inline"\n')
    assert "destinations.gravity.api_key:" in message
    assert "environment variable" in message
    assert "api_key_env" in message
    assert SECRET not in message


def test_settings_load_without_api_keys_so_that_producers_need_no_secrets(tmp_path):
    """Loading used to refuse a missing key, so ``Relay()`` in a web app failed with
    ``GRAVITY_API_KEY is not set``: producers never send to a vendor and need no keys."""
    settings = load_text(tmp_path, VALID, MY_KEY=None)
    dest = settings.destination("gravity")
    assert dest.api_key == "" and dest.api_key_env == "MY_KEY"
    assert settings.secrets == []
    relay = Relay(settings)  # builds its Redis client and scripts; connects only on enqueue
    relay.close()


def test_api_key_env_var_empty_loads_as_no_key(tmp_path):
    assert load_text(tmp_path, VALID, MY_KEY="").destination("gravity").api_key == ""


def test_bad_toml_is_reported_with_the_path(tmp_path):
    path = write(tmp_path, VALID + "max_events = = 3\n")
    with pytest.raises(ConfigurationError) as info:
        load_settings(env_for(path))
    message = str(info.value)
    assert str(path) in message
    assert "not valid TOML" in message


def test_missing_file_names_the_variable_and_path(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigurationError) as info:
        load_settings(env_for(path))
    message = str(info.value)
    assert message.startswith("CONVERSION_RELAY_CONFIG: no file at")
    assert str(path) in message


def test_wrong_type_is_named(tmp_path):
    message = config_error(tmp_path, VALID.replace("flush_deadline_seconds = 0.5", 'flush_deadline_seconds = "soon"'))
    assert message == "invalid configuration: relay.flush_deadline_seconds: Not a valid number."


def test_out_of_range_value_is_named(tmp_path):
    message = config_error(tmp_path, VALID + "max_bytes = 100\n")
    assert "destinations.gravity.max_bytes" in message


def test_bad_base_url_is_named(tmp_path):
    message = config_error(tmp_path, VALID.replace("https://api.trygravity.example/", "ftp://x"))
    assert "destinations.gravity.base_url" in message


@pytest.mark.parametrize("url", ["http://api.trygravity.example", "http://10.0.0.7:8080", "http://[2001:db8::1]/x"])
def test_plain_http_base_url_to_another_machine_is_refused(tmp_path, url):
    message = config_error(tmp_path, VALID.replace("https://api.trygravity.example/", url))
    assert message.startswith("invalid configuration: destinations.gravity.base_url: http:// to ")
    assert "would send the API key and personal data unencrypted; use https://" in message


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8765/gravity-capi", "http://127.9.9.9", "http://[::1]:8765", "http://localhost:9/x"]
)
def test_plain_http_base_url_on_loopback_is_accepted(tmp_path, url):
    assert load_text(tmp_path, VALID.replace("https://api.trygravity.example/", url)).destination("gravity").base_url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"https://user:{SECRET}@api.trygravity.example", "Credentials do not belong in the URL"),
        (f"https://api.trygravity.example/?api_key={SECRET}", "Remove the query string or fragment"),
    ],
)
def test_base_url_with_credentials_or_query_is_refused_without_repeating_them(tmp_path, url, problem):
    message = config_error(tmp_path, VALID.replace("https://api.trygravity.example/", url))
    assert f"destinations.gravity.base_url: {problem}" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("not a url", "Not a URL; use redis://host:6379/0, rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock."),
        ("http://cache.test:6379/0", "Scheme http:// is not one of redis://, rediss:// or unix://"),
        ("redis://cache.test:port/0", "The port or address is not valid; use redis://host:6379/0."),
        ("redis:///0", "No host; use redis://host:6379/0."),
        ("redis://cache.test/zero", "The database /zero is not a number; use /0 to /15 after the host and port."),
        ("unix://", "A unix:// URL needs the socket's path: unix:///path/to/redis.sock."),
        ("redis://cache.test/0?ssl_cert_reqs=none", "ssl_cert_reqs only apply to TLS; use a rediss:// URL"),
        ("rediss://cache.test/0?ssl_ca_cert=/ca.pem", "unknown TLS option ssl_ca_cert; a rediss:// URL takes"),
    ],
)
def test_redis_url_that_is_not_a_redis_url_is_refused_saying_what_is_wrong(tmp_path, url, problem):
    text = VALID.replace("[relay]\n", f'[relay]\nredis_url = "{url}"\n')
    message = config_error(tmp_path, text, REDIS_URL=None)
    assert message.startswith(f"invalid configuration: relay.redis_url: {problem}")


def test_redis_url_from_the_environment_is_checked_and_named_without_its_password(tmp_path):
    message = config_error(tmp_path, VALID, REDIS_URL=f"http://relay:{SECRET}@cache.test:6379/0")
    assert message == (
        "invalid configuration: relay.redis_url: REDIS_URL (which overrides relay.redis_url): Scheme http:// is not "
        "one of redis://, rediss:// or unix://; use redis://host:6379/0."
    )
    assert SECRET not in message


@pytest.mark.parametrize(
    "url", ["redis://cache.test:6379/0", "rediss://u:p@cache.test:6380/2?ssl_cert_reqs=required", "unix:///run/r.sock"]
)
def test_redis_urls_of_the_three_schemes_are_accepted(tmp_path, url):
    assert load_text(tmp_path, VALID, REDIS_URL=url).redis_url == url


# --- what one request may carry: the vendors' limits --------------------------------------------


def test_max_bytes_far_above_any_vendor_is_refused_saying_the_cap_is_assumed(tmp_path):
    message = config_error(tmp_path, VALID + "max_bytes = 900000000\n")
    assert message == (
        "invalid configuration: destinations.gravity.max_bytes: 900,000,000 is above 1,000,000 bytes, the relay's "
        "cap for Gravity Conversions API: the vendor documents no limit (docs/vendors/gravity_capi.md); set "
        "max_bytes to 1,000,000 or less."
    )


def test_max_bytes_at_the_cap_is_accepted(tmp_path):
    assert load_text(tmp_path, VALID + "max_bytes = 1000000\n").destination("gravity").max_bytes == 1_000_000


RECO = """\
[destinations.reco]
vendor = "gravity_reco"
customer = "shop"
location = "ams"
username = "shop"
api_key_env = "MY_KEY"
"""


def test_reco_max_events_above_its_documented_200_is_refused(tmp_path):
    message = config_error(tmp_path, RECO + "max_events = 201\n")
    assert "destinations.reco.max_events: 201 is above the vendor's documented limit of 200 events" in message
    assert load_text(tmp_path, RECO + "max_events = 200\n").destination("reco").max_events == 200


def test_reco_max_bytes_above_its_documented_1_mb_is_refused(tmp_path):
    message = config_error(tmp_path, RECO + "max_bytes = 2000000\n")
    assert "destinations.reco.max_bytes: 2,000,000 is above the vendor's documented limit of 1,000,000 bytes" in message


def test_tracify_max_events_cap_is_said_to_be_the_relays_assumption(tmp_path):
    csid = 'customer_site_id = "00000000-0000-0000-0000-000000000000"\n'
    text = '[destinations.tracify]\nvendor = "tracify"\napi_key_env = "MY_KEY"\nmax_events = 5000\n' + csid
    message = config_error(tmp_path, text)
    assert "destinations.tracify.max_events: 5,000 is above 1,000 events, the relay's cap for Tracify" in message
    assert "the vendor documents no limit (docs/vendors/tracify.md)" in message


# --- every problem at once ----------------------------------------------------------------------


def test_every_problem_of_every_table_is_reported_at_once(tmp_path):
    """A missing key used to hide ``max_events = 5000``: the first problem of a destination was
    the only one shown."""
    text = (
        VALID.replace("[relay]\n", "[relay]\nretry_horizon_seconds = 0\nbogus = 1\n").replace(
            "https://api.trygravity.example/", "http://api.trygravity.example"
        )
        + 'max_events = 5000\nmax_bytes = 100\napi_key = "inline"\n'
        + RECO
        + "max_events = 300\ncolour = 1\n"
    )
    with pytest.raises(ConfigurationError) as info:
        load_text(tmp_path, text, MY_KEY=None)
    keys = sorted(problem.split(":", 1)[0] for problem in info.value.problems)
    assert keys == [
        "destinations.gravity.api_key",
        "destinations.gravity.base_url",
        "destinations.gravity.max_bytes",
        "destinations.gravity.max_events",
        "destinations.reco.colour",
        "destinations.reco.max_events",
        "relay.bogus",
        "relay.retry_horizon_seconds",
    ]
    assert str(info.value) == "invalid configuration: " + "\n  ".join(info.value.problems)
    assert "inline" not in str(info.value)


# --- engine values that are nonsense, alone or together -----------------------------------------


@pytest.mark.parametrize(
    "key", ["retry_horizon_seconds", "backoff_base_seconds", "backoff_cap_seconds", "max_retry_after_seconds"]
)
def test_zero_seconds_where_the_engine_divides_or_loops_is_refused(tmp_path, key):
    text = VALID.replace("backoff_base_seconds = 2.0\n", f"{key} = 0\n")
    message = config_error(tmp_path, text)
    assert message.startswith(f"invalid configuration: relay.{key}: Must be above 0 s: ")


def test_backoff_base_above_the_cap_is_refused(tmp_path):
    text = VALID.replace("backoff_base_seconds = 2.0", "backoff_base_seconds = 30.0\nbackoff_cap_seconds = 10.0")
    message = config_error(tmp_path, text)
    assert message.startswith("invalid configuration: relay.backoff_cap_seconds: 10.0 is below backoff_base_seconds")


def test_flush_deadline_not_below_the_drain_budget_is_refused(tmp_path):
    text = VALID.replace("flush_deadline_seconds = 0.5", "flush_deadline_seconds = 5.0\ndrain_budget_seconds = 5.0")
    message = config_error(tmp_path, text)
    assert message.startswith("invalid configuration: relay.flush_deadline_seconds: 5.0 is not below drain_budget")


def test_enqueue_dedup_window_not_above_the_enqueue_timeout_is_refused(tmp_path):
    text = VALID.replace("[relay]\n", "[relay]\nenqueue_timeout_seconds = 5.0\nenqueue_dedup_seconds = 5.0\n")
    message = config_error(tmp_path, text)
    assert message.startswith("invalid configuration: relay.enqueue_dedup_seconds: 5.0 is not above enqueue_timeout")
    off = VALID.replace("[relay]\n", "[relay]\nenqueue_timeout_seconds = 5.0\nenqueue_dedup_seconds = 0\n")
    assert load_text(tmp_path, off).enqueue_dedup_seconds == 0


def test_bad_phone_region_is_named(tmp_path):
    message = config_error(tmp_path, VALID.replace("[relay]\n", '[relay]\ndefault_phone_region = "de"\n'))
    assert "relay.default_phone_region: Use an ISO 3166 alpha-2 code" in message


def test_several_errors_are_all_reported(tmp_path):
    text = VALID.replace("[relay]\n", "[relay]\nbogus = 1\n") + "colour = 1\n"
    message = config_error(tmp_path, text)
    assert "relay.bogus" in message
    assert "destinations.gravity.colour" in message


def test_reclaim_idle_seconds_is_refused_with_its_new_name(tmp_path):
    message = config_error(tmp_path, VALID.replace("[relay]\n", "[relay]\nreclaim_idle_seconds = 60.0\n"))
    assert "relay.reclaim_idle_seconds: Renamed to lease_seconds" in message


def test_lease_seconds_is_applied(tmp_path):
    settings = load_text(tmp_path, VALID.replace("[relay]\n", "[relay]\nlease_seconds = 3.0\n"))
    assert settings.lease_seconds == 3.0


@pytest.mark.parametrize("visibility", [136.0, 136.5, 137.9])
def test_visibility_timeout_not_above_the_drain_tasks_time_limit_is_refused(tmp_path, visibility):
    """100 s budget + 2 x 13.05 s request + 10 s = 136.1 s, which Celery gets as a 137 s time
    limit, and the broker gets the visibility timeout in whole seconds: 136.5 used to pass."""
    text = VALID.replace(
        "[relay]\n", f"[relay]\ndrain_budget_seconds = 100.0\nvisibility_timeout_seconds = {visibility}\n"
    )
    message = config_error(tmp_path, text)
    assert message.startswith(
        f"invalid configuration: relay.visibility_timeout_seconds: {visibility} is not above the 137 s a drain task "
        "may run (its hard time limit"
    )


def test_visibility_timeout_above_the_drain_tasks_time_limit_is_accepted(tmp_path):
    text = VALID.replace("[relay]\n", "[relay]\ndrain_budget_seconds = 100.0\nvisibility_timeout_seconds = 138.0\n")
    assert load_text(tmp_path, text).visibility_timeout_seconds == 138.0


@pytest.mark.parametrize("name", ["Gravity", "9lives", "has space", "dots.in.name", "x" * 41])
def test_destination_name_with_bad_characters_is_refused(tmp_path, name):
    text = VALID.replace("[destinations.gravity]", f'[destinations."{name}"]')
    message = config_error(tmp_path, text)
    assert f"destinations.{name}: Destination names are 1-40 characters" in message


def test_no_destinations_is_refused(tmp_path):
    message = config_error(tmp_path, "[relay]\n")
    assert "destinations: Configure at least one" in message


# --- the built-in sandbox configuration, only when asked for ---------------------------------------

SANDBOX = {"CONVERSION_RELAY_CONFIG": "sandbox", "REDIS_URL": LOCAL_REDIS}


@pytest.mark.parametrize("value", [None, "", "  "])
def test_without_a_configuration_loading_fails_naming_the_variable(value):
    """The sandbox configuration used to be the silent default, with the production key prefix."""
    env = {"REDIS_URL": LOCAL_REDIS, "GRAVITY_API_KEY": SECRET}
    if value is not None:
        env["CONVERSION_RELAY_CONFIG"] = value
    with pytest.raises(ConfigurationError) as info:
        load_settings(env)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("CONVERSION_RELAY_CONFIG is not set; set it to the path of the TOML configuration file")
    assert 'or to "sandbox" for the built-in configuration' in message


def test_sandbox_is_asked_for_by_name_and_keeps_its_data_under_its_own_prefix():
    settings = load_settings(SANDBOX)
    assert settings.key_prefix == "cr-sandbox"
    assert sorted(settings.destinations) == ["field", "gravity", "reco", "tracify"]
    assert {d.api_key for d in settings.destinations.values()} == {"sandbox-key"}
    assert settings.destination("gravity").base_url == "http://127.0.0.1:8765/gravity-capi"
    assert settings.broker_url == settings.redis_url == LOCAL_REDIS


def test_sandbox_follows_the_sandbox_url_and_never_takes_a_real_key():
    env = {
        **SANDBOX,
        "CONVERSION_RELAY_SANDBOX_URL": "http://127.0.0.2:9000/",
        "CONVERSION_RELAY_GRAVITY_API_KEY": SECRET,
    }
    dest = load_settings(env).destination("gravity")
    assert dest.vendor == "gravity_capi"
    assert dest.base_url == "http://127.0.0.2:9000/gravity-capi"
    assert dest.api_key == "sandbox-key"
    assert dest.queue == "relay.gravity"


def test_a_file_cannot_switch_the_sandbox_keys_on(tmp_path):
    message = config_error(tmp_path, "_sandbox = true\n" + VALID, MY_KEY=None)
    assert "_sandbox: Unknown table _sandbox" in message


def test_no_redis_anywhere_is_refused_rather_than_guessed():
    with pytest.raises(ConfigurationError, match="relay.redis_url: No Redis configured; set REDIS_URL"):
        load_settings({"CONVERSION_RELAY_CONFIG": "sandbox"})


def test_sandbox_uses_redis_url_from_environ():
    settings = load_settings({**SANDBOX, "REDIS_URL": "redis://cache.test:6380/5"})
    assert settings.redis_url == "redis://cache.test:6380/5"
    assert settings.broker_url == "redis://cache.test:6380/5"


def test_broker_url_from_environ_overrides_broker():
    settings = load_settings(
        {
            **SANDBOX,
            "REDIS_URL": "redis://cache.test:6380/5",
            "CONVERSION_RELAY_BROKER_URL": "redis://broker.test:6379/0",
        }
    )
    assert settings.redis_url == "redis://cache.test:6380/5"
    assert settings.broker_url == "redis://broker.test:6379/0"


def test_environment_urls_override_file_urls(tmp_path):
    text = VALID.replace(
        "[relay]\n", '[relay]\nredis_url = "redis://file.test/1"\nbroker_url = "redis://file.test/2"\n'
    )
    assert load_text(tmp_path, text, REDIS_URL=None).redis_url == "redis://file.test/1"
    assert load_text(tmp_path, text, REDIS_URL=None).broker_url == "redis://file.test/2"
    settings = load_text(
        tmp_path, text, REDIS_URL="redis://env.test/3", CONVERSION_RELAY_BROKER_URL="redis://env.test/4"
    )
    assert settings.redis_url == "redis://env.test/3"
    assert settings.broker_url == "redis://env.test/4"


def test_destination_name_with_trailing_newline_is_refused(tmp_path):
    text = VALID.replace("[destinations.gravity]", '[destinations."gravity\\n"]')
    message = config_error(tmp_path, text)
    assert "Destination names are 1-40 characters" in message
