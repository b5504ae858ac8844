"""Unit tests of worker.settings.load_settings: a TOML file plus an explicit environment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schemas.canonical import BEHAVIOUR_EVENT_NAMES
from worker.errors import ConfigurationError, RelayError
from worker.settings import (
    DEFAULT_SANDBOX_URL,
    SANDBOX_API_KEY,
    DestinationSettings,
    Settings,
    load_settings,
)

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


def test_unknown_key_in_relay_is_named(tmp_path):
    message = config_error(tmp_path, VALID.replace("[relay]\n", "[relay]\nflush_deadline = 2\n"))
    assert message == "invalid configuration: relay.flush_deadline: Unknown field."


def test_unknown_key_in_destination_is_named(tmp_path):
    message = config_error(tmp_path, VALID + 'api_url = "https://x.example"\n')
    assert message == "invalid configuration: destinations.gravity.api_url: Unknown field."


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
    assert "destinations.gravity.max_events" in message
    assert "1001" in message and "1000" in message


def test_max_events_at_vendor_limit_is_accepted(tmp_path):
    assert load_text(tmp_path, VALID + "max_events = 1000\n").destination("gravity").max_events == 1000


def test_api_key_inline_in_file_is_refused_pointing_at_environment(tmp_path):
    message = config_error(tmp_path, VALID + f'api_key = "{SECRET}-inline"\n')
    assert "destinations.gravity.api_key:" in message
    assert "environment variable" in message
    assert "api_key_env" in message
    assert SECRET not in message


def test_api_key_env_var_not_set_is_named(tmp_path):
    path = write(tmp_path, VALID)
    with pytest.raises(ConfigurationError) as info:
        load_settings({"CONVERSION_RELAY_CONFIG": str(path)})
    message = str(info.value)
    assert "destinations.gravity.api_key_env" in message
    assert "Environment variable MY_KEY is not set" in message


def test_api_key_env_var_empty_counts_as_not_set(tmp_path):
    message = config_error(tmp_path, VALID, MY_KEY="")
    assert "MY_KEY is not set" in message


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


def test_visibility_timeout_not_above_the_drain_task_hard_limit_is_refused(tmp_path):
    # 100 s budget + 2 x 13.05 s request + 10 s = 136 s a drain task may run.
    text = VALID.replace("[relay]\n", "[relay]\ndrain_budget_seconds = 100.0\nvisibility_timeout_seconds = 136.0\n")
    message = config_error(tmp_path, text)
    assert message.startswith("relay.visibility_timeout_seconds: 136.0 is not above the 136 s a drain task may run")


def test_visibility_timeout_above_the_drain_task_hard_limit_is_accepted(tmp_path):
    text = VALID.replace("[relay]\n", "[relay]\ndrain_budget_seconds = 100.0\nvisibility_timeout_seconds = 137.0\n")
    assert load_text(tmp_path, text).visibility_timeout_seconds == 137.0


@pytest.mark.parametrize("name", ["Gravity", "9lives", "has space", "dots.in.name", "x" * 41])
def test_destination_name_with_bad_characters_is_refused(tmp_path, name):
    text = VALID.replace("[destinations.gravity]", f'[destinations."{name}"]')
    message = config_error(tmp_path, text)
    assert f"destinations.{name}: Destination names are 1-40 characters" in message


def test_no_destinations_is_refused(tmp_path):
    message = config_error(tmp_path, "[relay]\n")
    assert "destinations: Configure at least one" in message


# --- no file: the built-in sandbox configuration ----------------------------------------------


def test_builtin_settings_point_gravity_at_sandbox_with_sandbox_key():
    settings = load_settings({"CONVERSION_RELAY_SANDBOX_URL": "http://sandbox.test:9000/", "REDIS_URL": LOCAL_REDIS})
    dest = settings.destination("gravity")
    assert dest.vendor == "gravity_capi"
    assert dest.base_url == "http://sandbox.test:9000/gravity-capi"
    assert dest.api_key == SANDBOX_API_KEY == "sandbox-key"
    assert dest.queue == "relay.gravity"


def test_builtin_settings_default_sandbox_url():
    settings = load_settings({"REDIS_URL": LOCAL_REDIS})
    assert settings.destination("gravity").base_url == f"{DEFAULT_SANDBOX_URL}/gravity-capi"
    assert settings.broker_url == settings.redis_url == LOCAL_REDIS


def test_no_redis_anywhere_is_refused_rather_than_guessed():
    with pytest.raises(ConfigurationError, match="relay.redis_url: No Redis configured; set REDIS_URL"):
        load_settings({})


def test_builtin_settings_use_redis_url_from_environ():
    settings = load_settings({"REDIS_URL": "redis://cache.test:6380/5"})
    assert settings.redis_url == "redis://cache.test:6380/5"
    assert settings.broker_url == "redis://cache.test:6380/5"


def test_broker_url_from_environ_overrides_broker():
    settings = load_settings(
        {"REDIS_URL": "redis://cache.test:6380/5", "CONVERSION_RELAY_BROKER_URL": "redis://broker.test:6379/0"}
    )
    assert settings.redis_url == "redis://cache.test:6380/5"
    assert settings.broker_url == "redis://broker.test:6379/0"


def test_empty_config_variable_means_builtin_settings():
    settings = load_settings({"CONVERSION_RELAY_CONFIG": "", "REDIS_URL": LOCAL_REDIS})
    assert settings.destination("gravity").api_key == SANDBOX_API_KEY


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
