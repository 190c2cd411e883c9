"""pytest plugin of nrm-verify (registered through the ``pytest11`` entry point).

In a test suite of your own:

    def test_my_model_keeps_the_laws(assert_laws):
        assert_laws(model, x, target=3, rules=nrm.presets.EpsilonGammaFlat())

    def test_my_rule_is_sound(assert_rule_sound):
        assert_rule_sound(MyRule(0.5))        # the validator, with the active profile

    @pytest.mark.nrm_slow                        # a thorough search: skipped unless --nrm-slow
    def test_my_rule_thoroughly(assert_rule_sound):
        assert_rule_sound(MyRule(0.5))        # uses the "thorough" profile here

What it provides:

* fixtures ``assert_laws`` (every applicable law of NRM-SPEC §4 on one given case, see
  :func:`assert_laws`), ``assert_rule_sound`` (:func:`nrm_verify.validate.rules.check_rule`
  with the active hypothesis profile; "thorough" in tests marked ``nrm_slow``) and
  ``nrm_profile`` (the name of the profile in force);
* the marker ``nrm_slow``: such tests run only with ``--nrm-slow`` (or ``NRM_SLOW=1``);
* the hypothesis profiles ``ci`` and ``thorough`` (:mod:`nrm_verify.properties.profiles`). The profile
  is chosen by ``--hypothesis-profile``, else the environment variable
  ``HYPOTHESIS_PROFILE``, else the ini option ``nrm_hypothesis_profile``; with none of
  them hypothesis's own default stays in force.

Heavy imports (torch, nrm) happen only when a fixture is used.
"""

from __future__ import annotations

import os

import pytest

from nrm_verify.properties import profiles  # noqa: F401 — registers the profiles before hypothesis reads --hypothesis-profile

SLOW_MARKER = "nrm_slow"


PROFILE_KEY = pytest.StashKey[str]()
"""Where the plugin keeps the hypothesis profile in force (pytest's ``config.stash``)."""


def pytest_addoption(parser):
    group = parser.getgroup("nrm-verify")
    group.addoption("--nrm-slow", action="store_true", default=False,
                    help="run tests marked nrm_slow (thorough searches with the 'thorough' profile)")
    parser.addini("nrm_hypothesis_profile", "hypothesis profile to load when neither --hypothesis-profile nor "
                  "HYPOTHESIS_PROFILE chooses one (nrm-verify registers 'ci' and 'thorough')", default="")


def _active_profile(config) -> str:
    chosen = config.getoption("hypothesis_profile", None) if _has_option(config, "hypothesis_profile") else None
    return chosen or os.environ.get("HYPOTHESIS_PROFILE") or config.getini("nrm_hypothesis_profile") or ""


def _has_option(config, name: str) -> bool:
    try:
        config.getoption(name)
    except ValueError:
        return False
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", f"{SLOW_MARKER}: a thorough nrm-verify search; runs only with --nrm-slow "
                            "(or NRM_SLOW=1) and with the 'thorough' hypothesis profile")
    profile = _active_profile(config)
    if profile:
        from hypothesis import settings
        from hypothesis.errors import InvalidArgument

        try:
            settings.load_profile(profile)
        except InvalidArgument as e:
            raise pytest.UsageError(f"nrm-verify: unknown hypothesis profile {profile!r} ({e}); "
                                    "registered: 'ci', 'thorough' and your own") from None
    config.stash[PROFILE_KEY] = profile or "default"


def _slow_enabled(config) -> bool:
    return bool(config.getoption("nrm_slow")) or os.environ.get("NRM_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if _slow_enabled(config):
        return
    skip = pytest.mark.skip(reason="nrm_slow: a thorough search; run with --nrm-slow (or NRM_SLOW=1)")
    for item in items:
        if item.get_closest_marker(SLOW_MARKER) is not None:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"nrm-verify: hypothesis profile {config.stash.get(PROFILE_KEY, 'default')!r}" + (
        ", nrm_slow tests enabled" if _slow_enabled(config) else "")


@pytest.fixture
def nrm_profile(request) -> str:
    """The hypothesis profile for this test: 'thorough' in a test marked nrm_slow, else
    the profile in force ('ci', 'thorough', or 'default')."""
    if request.node.get_closest_marker(SLOW_MARKER) is not None:
        return "thorough"
    from hypothesis import settings

    return settings.get_current_profile_name() if hasattr(settings, "get_current_profile_name") else \
        request.config.stash.get(PROFILE_KEY, "default")


def assert_laws(model, x, target, rules=None, *, events=None, tol: float | None = None, x2=None) -> list:
    """Assert every law of the measure that applies to ``nrm.explain(model, x, target,
    rules=rules)``: normalization and column-stochastic kernels (L1), additivity (L2),
    marginalization (L3), chain rule and multiplicative law (L4), Bayes (L5), total
    measure (L6), Markov (L7), LRP equivalence (L8), channel sums (L17), batch invariance
    for a batch, and the rule relations L9–L14 that concern the rules in use.

    ``events`` replaces the default events (:func:`nrm_verify.properties.checks.default_events`);
    ``tol`` the tolerance; ``x2`` (a second input) adds L14 for input-independent rules.
    Returns the results; raises AssertionError naming every violated law, with the
    call that shows it."""
    from nrm_verify.properties.checks import laws_on_case

    results = laws_on_case(model, x, target, rules, events=events, tol=tol, x2=x2)
    bad = [(code, r) for code, r in results if r.holds is False]
    if bad:
        from nrm_verify.properties import abbreviate
        from nrm_verify.properties.codegen import Writer

        rules_code = abbreviate.line(abbreviate.lists(Writer().expr(rules)), 200)
        lines = [f"{len(bad)} of {len(results)} law checks violated for rules={rules_code}:"]
        shortened = False
        for code, r in bad[:MAX_LISTED]:
            lines.append(abbreviate.line(f"  {abbreviate.lists(str(r))}"))
            call = code.splitlines()[-1]
            short = abbreviate.line(abbreviate.lists(call), 300)
            shortened |= short != call
            lines.append(f"      reproduce: m = nrm.explain(model, x, {target!r}, rules=rules); {short}")
        if len(bad) > MAX_LISTED:
            lines.append(f"  … and {len(bad) - MAX_LISTED} more violated law checks")
        if shortened:
            lines.append("  (long neuron lists are shortened here; nrm_verify.properties.checks.laws_on_case("
                         "model, x, target, rules) returns every call in full)")
        error = AssertionError("\n".join(lines))
        error.results = results  # (code, LawResult) of every check, the calls in full
        raise error
    return [r for _, r in results]


MAX_LISTED = 25
"""Violated law checks that an assert_laws message lists at most."""


@pytest.fixture(name="assert_laws")
def assert_laws_fixture():
    """``assert_laws(model, x, target, rules)``: every applicable law, in one line."""
    return assert_laws


@pytest.fixture
def assert_rule_sound(nrm_profile):
    """``assert_rule_sound(rule, **check_rule_options)``: run the validator on ``rule`` with
    this test's profile; fail with the report when a law is violated or the rule raises."""
    from nrm_verify.validate.rules import check_rule

    def check(rule, **options):
        options.setdefault("profile", nrm_profile if nrm_profile in ("ci", "thorough") else "ci")
        options.setdefault("symbolic", False)
        report = check_rule(rule, **options)
        if not report.ok:
            raise AssertionError(str(report))
        return report

    return check
