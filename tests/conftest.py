"""Suite-wide test settings."""

from hypothesis import HealthCheck, settings

# Timing-based health checks and deadlines make property tests flaky on a loaded 2-core machine; the
# properties themselves are what we test, not how fast an example runs.
settings.register_profile("pcc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pcc")
