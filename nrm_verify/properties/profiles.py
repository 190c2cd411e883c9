"""The hypothesis profiles of nrm-verify (registered on import; no torch needed).

* ``ci`` — derandomized (the same cases on every run), 20 examples per test, no deadline,
  no example database: reproducible and bounded, for continuous integration;
* ``thorough`` — 400 examples per test, no deadline, random: for long searches
  (``@pytest.mark.nrm_slow`` tests, ``nrm-verify check-rule --profile thorough``).

Choose one with ``HYPOTHESIS_PROFILE=thorough``, ``pytest --hypothesis-profile=thorough``
or the pytest ini option ``nrm_hypothesis_profile`` (see :mod:`nrm_verify.pytest_plugin`).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

CI_EXAMPLES = 20
THOROUGH_EXAMPLES = 400
_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]

settings.register_profile("ci", derandomize=True, max_examples=CI_EXAMPLES, deadline=None, database=None,
                          print_blob=False, suppress_health_check=_QUIET_CHECKS)
settings.register_profile("thorough", max_examples=THOROUGH_EXAMPLES, deadline=None,
                          suppress_health_check=_QUIET_CHECKS)

PROFILES = ("ci", "thorough")

__all__ = ["PROFILES", "CI_EXAMPLES", "THOROUGH_EXAMPLES"]
