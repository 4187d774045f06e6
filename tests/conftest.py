"""Suite-wide test settings."""

from hypothesis import HealthCheck, settings

# Timing-based health checks and deadlines make property tests flaky on a loaded 2-core machine; the
# properties themselves are what we test, not how fast an example runs.
settings.register_profile("pcc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pcc")


def pytest_addoption(parser) -> None:  # noqa: ANN001
    parser.addoption("--runslow", action="store_true", default=False, help="also run the tests marked slow")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    if config.getoption("--runslow"):
        return
    import pytest

    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
