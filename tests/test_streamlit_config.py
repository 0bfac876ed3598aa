""".streamlit/config.toml: the deployment's safety settings stay on, under option names Streamlit knows."""

from __future__ import annotations

import tomllib

import pytest
from streamlit import config as st_config

from core import config

CONFIG_TOML = config.PROJECT_ROOT / ".streamlit" / "config.toml"


@pytest.fixture(scope="module")
def settings() -> dict:
    with open(CONFIG_TOML, "rb") as fh:
        return tomllib.load(fh)


def test_every_option_is_one_streamlit_knows(settings: dict) -> None:
    known = set(st_config._config_options_template)  # "section.option" names of this streamlit version
    names = {f"{section}.{key}" for section, values in settings.items() for key in values}
    assert names - known == set()


def test_xsrf_and_cors_protection_stay_on(settings: dict) -> None:
    assert settings["server"]["enableXsrfProtection"] is True
    assert settings["server"]["enableCORS"] is True


def test_uploads_are_capped_at_the_app_s_own_file_limit(settings: dict) -> None:
    cap_mb = settings["server"]["maxUploadSize"]
    assert isinstance(cap_mb, int) and 0 < cap_mb <= config.MAX_FILE_BYTES // (1024 * 1024)


def test_error_details_are_hidden_and_usage_statistics_off(settings: dict) -> None:
    assert settings["client"]["showErrorDetails"] == "none"
    assert settings["browser"]["gatherUsageStats"] is False


def test_no_theme_font_is_fetched_from_another_host(settings: dict) -> None:
    """Offline: a theme font given as a URL (or a fontFaces entry) would be fetched by every browser."""
    theme = settings.get("theme", {})
    assert "fontFaces" not in theme
    assert not [v for v in theme.values() if isinstance(v, str) and "://" in v]
