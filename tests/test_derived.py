"""The explicit reference's kernel derived from the rule object
(:mod:`nrm_verify.references.derived`), and law L18 on rules of one's own.

* for every built-in rule × conventions, the derived kernel equals the hand-written table
  of :mod:`nrm_verify.references.explicit`: bit for bit on dyadic layers (every sum exact in
  float64), ≤ 1e-12 relative on random layers
  (zero weights, dead columns, per-sample LRN matrices) and on every linear node of MLPs,
  CNNs, 1-d CNNs, residual and concatenating networks;
* :func:`~nrm_verify.references.explicit.supports` says which rules the reference cannot
  write, and why;
* L18 (:func:`nrm_verify.laws.modularity`) holds on residual and concatenation networks for
  user rules built from Share/Part (a z-rule by parts, a two-share mix with its own
  coefficients, a subclass of AlphaBeta, the sign-aware example with its own column), and is
  violated for a rule whose weight function is not elementwise (on a branch merge the engine
  sees the sum's weights (1, 1), the reference the matrix [I I]);
* L18 catches a deliberately broken engine path for a user rule (``Rule.column`` halved by a
  monkeypatch: columns still sum to one, the derived reference does not call it);
* ``check_rule(<user rule>, only=["L18"])`` checks L18 (it was "not applicable" before).
"""

from __future__ import annotations

import sys
from pathlib import Path

import dag_models
import nets
import pytest
import torch
from torch import nn

import nrm
from nrm.lrn import LRNIdentity, LRNTaylor
from nrm.rules import AlphaBeta, Part, Rule, Share, identity, negative, positive
from nrm_verify import laws
from nrm_verify.laws import catalogue
from nrm_verify.references import explicit
from nrm_verify.references.derived import UnsupportedRuleError, derived_kernel
from nrm_verify.references.explicit import reference_lrp, rule_kernel, supports, unsupported_reason
from nrm_verify.validate import HELD, NOT_APPLICABLE, VIOLATED, check_rule
from nrm_verify.zoo import architectures as A

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "rules"))
from relevance_dependent import RelevanceGatedZPlus  # noqa: E402
from sign_aware import SignAwareGammaEpsilon  # noqa: E402

R = nrm.rules
DTYPE = torch.float64
REL = 1e-12
REL_NETWORK = 1e-11
"""On networks a column can be ill-conditioned (z_k a few thousandths of its terms, |q| ~ 3e3 on
the ResNet below): Σ_j summed in another memory order then moves q by ~1e-16 × that condition
(worst measured 7e-13 relative, LRP-0 on resnet-basic's layer2.0.conv1)."""

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny networks: threads only add start-up cost

BUILTIN = {
    "zero": lambda: R.Zero(),
    "zero-renormalize": lambda: R.Zero(leak="renormalize"),
    "epsilon": lambda: R.Epsilon(0.1),
    "epsilon-unsigned": lambda: R.Epsilon(0.1, stabilizer_sign="unsigned"),
    "epsilon-renormalize": lambda: R.Epsilon(0.1, leak="renormalize"),
    "gamma": lambda: R.Gamma(0.25),
    "gamma-rawbias-stabilized": lambda: R.Gamma(1.0, modify_bias=False, stabilizer=0.01),
    "gamma-unsigned-renormalize": lambda: R.Gamma(0.5, stabilizer=0.01, stabilizer_sign="unsigned",
                                                  leak="renormalize"),
    "zplus": lambda: R.ZPlus(),
    "zplus-nobias": lambda: R.ZPlus(bias=False),
    "zplus-stabilized": lambda: R.ZPlus(stabilizer=0.01),
    "alphabeta21": lambda: R.AlphaBeta(2, 1),
    "alphabeta10": lambda: R.AlphaBeta(1, 0),
    "alphabeta-stabilized-renormalize": lambda: R.AlphaBeta(1.5, 0.5, stabilizer=0.01, leak="renormalize"),
    "wsquare": lambda: R.WSquare(),
    "wsquare-bias": lambda: R.WSquare(bias=True),
    "wsquare-unsigned": lambda: R.WSquare(stabilizer=0.1, stabilizer_sign="unsigned"),
    "flat": lambda: R.Flat(),
    "flat-renormalize": lambda: R.Flat(leak="renormalize"),
    "zbox": lambda: R.ZBox(-1.0, 1.0),
}
LRN_RULES = {
    "lrn-taylor": lambda: LRNTaylor(),
    "lrn-taylor-eps-gradient": lambda: LRNTaylor(0.05, expansion="gradient"),
    "lrn-taylor-renormalize": lambda: LRNTaylor(leak="renormalize"),
    "lrn-identity": lambda: LRNIdentity(),
}


# -- rules of one's own ------------------------------------------------------------------------
class ZeroByParts(Rule):
    """LRP-ε written by parts: c(j, k) = a_j w_jk⁺ + a_j w_jk⁻ (= a_j w_jk), bias b_k."""

    def __init__(self, stabilizer: float = 0.01):
        super().__init__(stabilizer=stabilizer)

    def shares(self):
        return (Share((Part(identity, positive), Part(identity, negative)), identity),)


class EpsilonPlusMix(Rule):
    """¾ LRP-ε + ¼ z⁺ on a⁺: two shares with κ = (0.75, 0.25) (``share_coefficients``)."""

    def __init__(self, stabilizer: float = 1e-3):
        super().__init__(stabilizer=stabilizer)

    def shares(self):
        return (Share((Part(identity, identity),), identity), Share((Part(positive, positive),), positive))

    def share_coefficients(self):
        return (0.75, 0.25)


class AlphaBetaByParts(AlphaBeta):
    """αβ by a subclass (not in the reference's table): AlphaBeta's ``coefficients`` hook
    (its fallbacks) read from the class, the shares derived."""

    def shares(self):
        return super().shares()


class MeanFreeZero(Rule):
    """Wrong on purpose: v(w) = w − mean(w) reads the whole weight tensor (not elementwise),
    so it means one thing on a convolution's kernel or a sum's weights (1, 1) and another on
    the dense matrix of the same layer."""

    def shares(self):
        return (Share((Part(identity, lambda ops, w: w - w.mean()),), identity),)


USER_RULES = {
    "zero-by-parts": ZeroByParts,
    "epsilon-plus-mix": EpsilonPlusMix,
    "alphabeta-subclass": lambda: AlphaBetaByParts(3, 2),
    "sign-aware-example": lambda: SignAwareGammaEpsilon(0.5, 1e-3),
}


def deviation(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got − expected| / max |expected| (0 for two zero tensors)."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    err = float((got - expected).abs().max()) if expected.numel() else 0.0
    return err / scale if scale > 0 else err


# -- derived = hand-written, on random layers ----------------------------------------------------
def random_layer(seed: int, per_sample: bool = False):
    """a (B, N), W (K, N) or (B, K, N), b (K,), M (K, N): zero weights inside the structure,
    a column without connections, a column whose inputs are all zero, a zero bias."""
    g = torch.Generator().manual_seed(seed)
    B, N, K = 3, 6, 5
    a = torch.randn(B, N, generator=g, dtype=DTYPE)
    a[:, 4:] = a[:, 4:].abs()
    M = torch.rand(K, N, generator=g) < 0.7
    M[0] = False  # no connection: every share's denominator is its bias (or zero)
    M[1] = False
    M[1, 5] = True
    a[0, 5] = 0.0  # sample 0: column 1's contributions are all zero
    W = torch.randn((B, K, N) if per_sample else (K, N), generator=g, dtype=DTYPE) * M
    W[..., 2, 0] = 0.0  # a zero weight that is a connection (flat and w² count it)
    M[2, 0] = True
    b = torch.randn(K, generator=g, dtype=DTYPE)
    b[3] = 0.0
    return a, W, b, M


@pytest.mark.parametrize("rule_name", sorted(BUILTIN) + sorted(LRN_RULES))
@pytest.mark.parametrize("seed", range(4))
def test_derived_equals_the_table_on_random_layers(rule_name, seed):
    rule = {**BUILTIN, **LRN_RULES}[rule_name]()
    for bias in (True, False):
        for per_sample in (False, True):
            a, W, b, M = random_layer(seed, per_sample)
            b = b if bias else None
            Q, qbot = rule_kernel(rule, a, W, b, M, (a.shape[1],))
            Qd, qbotd = rule_kernel(rule, a, W, b, M, (a.shape[1],), derive=True)
            what = f"{rule!r}, bias={bias}, per_sample={per_sample}"
            assert deviation(Qd, Q) <= REL, what
            assert deviation(qbotd, qbot) <= REL, what
            assert torch.isfinite(Qd).all() and torch.isfinite(qbotd).all(), what


def dyadic_layer(seed: int, per_sample: bool = False):
    """Like :func:`random_layer`, on a grid of quarters and halves (|a|, |b| ≤ 1, |w| ≤ 2): every
    product and sum of the kernel is exact in float64, so only the divisions (and adding ε)
    round — once, in both implementations, whatever their order of summation."""
    g = torch.Generator().manual_seed(seed)
    B, N, K = 3, 6, 5
    a = torch.randint(-4, 5, (B, N), generator=g).to(DTYPE) / 4
    M = torch.rand(K, N, generator=g) < 0.7
    M[0] = False  # no connection
    W = torch.randint(-4, 5, (B, K, N) if per_sample else (K, N), generator=g).to(DTYPE) / 2 * M
    M[2, 0] = True  # a zero weight that is a connection
    b = torch.randint(-4, 5, (K,), generator=g).to(DTYPE) / 4
    return a, W, b, M


@pytest.mark.parametrize("rule_name", sorted(BUILTIN))
def test_derived_equals_the_table_exactly_on_dyadic_inputs(rule_name):
    """Bit for bit (torch.equal), every built-in rule × conventions, 20 layers with and without
    bias, shared and per-sample weights: zero and tied denominators, dead columns included."""
    rule = BUILTIN[rule_name]()
    for seed in range(20):
        for bias in (True, False):
            for per_sample in (False, True):
                a, W, b, M = dyadic_layer(seed, per_sample)
                b = b if bias else None
                Q, qbot = rule_kernel(rule, a, W, b, M, (a.shape[1],))
                Qd, qbotd = rule_kernel(rule, a, W, b, M, (a.shape[1],), derive=True)
                what = f"{rule!r}, seed={seed}, bias={bias}, per_sample={per_sample}"
                assert torch.equal(Qd, Q) and torch.equal(qbotd, qbot), what


def test_derived_column_by_hand():
    """The column of tests/test_reference.py (a = (1, −2, 0.5), w = (2, 1, −4), b = 0.5,
    z = −1.5), derived: LRP-0, αβ and z^B as the equations give them."""
    a = torch.tensor([[1.0, -2.0, 0.5]], dtype=DTYPE)
    W = torch.tensor([[2.0, 1.0, -4.0]], dtype=DTYPE)
    b = torch.tensor([0.5], dtype=DTYPE)
    M = torch.ones(1, 3, dtype=torch.bool)
    Q, qbot = derived_kernel(R.Zero(), a, W, b, M, (3,))
    assert torch.allclose(Q[0, :, 0], torch.tensor([2 / -1.5, -2 / -1.5, -2 / -1.5], dtype=DTYPE), rtol=1e-15)
    assert float(qbot) == pytest.approx(0.5 / -1.5, rel=1e-15)
    Q, qbot = derived_kernel(R.AlphaBeta(2, 1), a, W, b, M, (3,))  # P = 2.5, N = −4
    assert torch.allclose(Q[0, :, 0], torch.tensor([4 / 2.5, -2 / 4, -2 / 4], dtype=DTYPE), rtol=1e-15)
    assert float(qbot) == pytest.approx(2 * 0.5 / 2.5, rel=1e-15)
    Q, qbot = derived_kernel(R.ZBox(-2.0, 1.0), a, W, b, M, (3,))  # (6, 0, 2) / 8
    assert torch.allclose(Q[0, :, 0], torch.tensor([0.75, 0.0, 0.25], dtype=DTYPE), rtol=1e-15)
    assert float(qbot) == 0.0
    Q, qbot = derived_kernel(EpsilonPlusMix(), a, W, b, M, (3,))  # ε-share D' = −1.501; z⁺ share (2 + 0.5) + ε
    eps_share = torch.tensor([2.0, -2.0, -2.0], dtype=DTYPE) / (-1.5 - 1e-3)
    plus_share = torch.tensor([2.0, 0.0, 0.0], dtype=DTYPE) / (2.5 + 1e-3)
    assert torch.allclose(Q[0, :, 0], 0.75 * eps_share + 0.25 * plus_share, rtol=1e-14)
    assert float(qbot) == pytest.approx(1 - float(Q.sum()), rel=1e-12)


def test_one_zero_denominator_sends_a_two_share_column_to_the_absorber():
    """a = (1, 1), w = (1, −1), no bias, ε = 0: the LRP-0 share's D is 0 while the z⁺ share's is
    1; a zero denominator sends the column wholly to ⊥ (NRM-SPEC §2): q = 0, q(⊥ | k) = 1."""
    a = torch.ones(1, 2, dtype=DTYPE)
    W = torch.tensor([[1.0, -1.0]], dtype=DTYPE)
    M = torch.ones(1, 2, dtype=torch.bool)
    Q, qbot = derived_kernel(EpsilonPlusMix(stabilizer=0.0), a, W, None, M, (2,))
    assert torch.equal(Q, torch.zeros_like(Q)) and float(qbot) == 1.0
    Q, qbot = derived_kernel(EpsilonPlusMix(), a, W, None, M, (2,))  # ε: both live
    assert float(Q[0, 0, 0]) == pytest.approx(0.75 / 1e-3 + 0.25 / (1 + 1e-3), rel=1e-12)


# -- derived = hand-written, on networks -------------------------------------------------------------
def _lrn_net(seed: int):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.LocalResponseNorm(3, alpha=0.5, k=1.0),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).to(DTYPE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DTYPE) * 0.5)
    return model, torch.rand(2, 2, 4, 4, generator=g, dtype=DTYPE) * 2 - 1


NETWORKS = {
    **{f"sequential{seed}": (lambda seed=seed: (lambda c: (c.model, c.x))(nets.network(seed, batch=2)))
       for seed in range(5)},
    **{f"{name}": (lambda b=b: b(3)) for name, b in dag_models.BUILDERS.items()},
    "resnet-basic": lambda: (A.resnet("basic", seed=2, dtype=DTYPE),
                             torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2), dtype=DTYPE) * 2 - 1),
}


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_derived_equals_the_table_on_every_node(network):
    """Every built-in rule × conventions (z^B on the first layer, under ε elsewhere): the derived
    kernel of every linear node, and the relevance at every layer, equal the table's."""
    model, x = NETWORKS[network]()
    for rule_name, make in BUILTIN.items():
        rules = nrm.RuleMap(R.Epsilon(0.1), first=make()) if rule_name == "zbox" else make()
        table, derived = explicit.RefGraph(model, x, rules), explicit.RefGraph(model, x, rules, derive=True)
        linear = [n for n in table.order if table.nodes[n].kind == "linear"]
        assert linear
        for n in linear:
            for got, expected in ((derived.nodes[n].Q, table.nodes[n].Q), (derived.nodes[n].qbot, table.nodes[n].qbot)):
                assert deviation(got, expected) <= REL_NETWORK, f"{network}, {rule_name}, node {n!r}"
        with torch.no_grad():
            start, _ = explicit.start_relevance(table, int(model(x)[0].abs().argmax()))
        relevance, relevance_derived = table.propagate(start)[0], derived.propagate(start)[0]
        scale = max(float(r.abs().max()) for r in relevance.values())
        for name, r in relevance.items():
            assert float((relevance_derived[name] - r).abs().max()) <= REL_NETWORK * scale, (network, rule_name, name)


def test_reference_lrp_derives_on_request():
    """``reference_lrp(..., derive=True)``: the built-in rules through the derivation, same relevance."""
    model, x = dag_models.residual_cnn(1)
    rules = nrm.presets.EpsilonGammaBox(-1.0, 1.0)
    ref, ref_derived = reference_lrp(model, x, 0, rules), reference_lrp(model, x, 0, rules, derive=True)
    for name, r in ref.relevance.items():
        assert deviation(ref_derived.relevance[name], r) <= REL, name
        assert deviation(ref_derived.absorbed[name], ref.absorbed[name]) <= REL, name


@pytest.mark.parametrize("rule_name", sorted(LRN_RULES))
def test_derived_equals_the_table_on_a_local_response_norm(rule_name):
    model, x = _lrn_net(5)
    rules = {nn.LocalResponseNorm: LRN_RULES[rule_name](), nn.Conv2d: R.Epsilon(0.1), nn.Linear: R.Zero()}
    table, derived = explicit.RefGraph(model, x, rules), explicit.RefGraph(model, x, rules, derive=True)
    lrn = [n for n in table.order if table.nodes[n].lrn]
    assert lrn
    for n in lrn:
        assert deviation(derived.nodes[n].Q, table.nodes[n].Q) <= REL, n
        assert deviation(derived.nodes[n].qbot, table.nodes[n].qbot) <= REL, n


# -- supports --------------------------------------------------------------------------------------------
class RaisingShares(Rule):
    def shares(self):
        raise RuntimeError("not today")


class NotShares(Rule):
    def shares(self):
        return (Part(identity, identity),)


class ThreeCoefficients(EpsilonPlusMix):
    def share_coefficients(self):
        return (0.5, 0.25, 0.25)


def test_supports_says_which_rules_have_no_kernel_and_why():
    for make in [*BUILTIN.values(), *LRN_RULES.values(), *USER_RULES.values(), MeanFreeZero]:
        assert supports(make()) is True and unsupported_reason(make()) == "", make()
    for rule, why in ((RelevanceGatedZPlus(), "reads the incoming relevance"),
                      (RaisingShares(), "shares() raised RuntimeError: not today"),
                      (NotShares(), "not an nrm.rules.Share"),
                      (ThreeCoefficients(), "3 coefficients for 2 shares")):
        assert supports(rule) is False, rule
        assert why in unsupported_reason(rule), rule
        assert why in catalogue.law("L18").checks[0].applies(rule), rule  # L18: not applicable, with the reason
    for make in [*BUILTIN.values(), *USER_RULES.values(), MeanFreeZero]:
        assert catalogue.law("L18").checks[0].applies(make()) == "", make()
    a, W, b, M = random_layer(0)
    for rule in (RelevanceGatedZPlus(), RaisingShares()):
        with pytest.raises(UnsupportedRuleError, match=type(rule).__name__):
            rule_kernel(rule, a, W, b, M, (a.shape[1],))


# -- L18 on user rules --------------------------------------------------------------------------------------
BRANCHED = {
    **{name: (lambda b=b: b(0)) for name, b in dag_models.BUILDERS.items()},
    "resnet-basic": lambda: (A.resnet("basic", seed=1, dtype=DTYPE),
                             torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DTYPE) * 6 - 3),
    "inception": lambda: (A.inception(seed=1, dtype=DTYPE),
                          torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=DTYPE) * 6 - 3),
}


def _modularity(network: str, rule):
    model, x = BRANCHED[network]()
    with torch.no_grad():
        target = int(model(x)[0].abs().argmax())
    m = nrm.explain(model, x, target=target, rules=rule)
    return laws.modularity(m, model, x, target, rule)


@pytest.mark.parametrize("rule_name", sorted(USER_RULES))
@pytest.mark.parametrize("network", sorted(BRANCHED))
def test_l18_holds_for_user_rules_on_branched_models(network, rule_name):
    result = _modularity(network, USER_RULES[rule_name]())
    assert result.holds is True, str(result)
    assert "marginals equal explicit LRP on the original graph" in result.detail


@pytest.mark.parametrize("network", ["residual_mlp", "residual_cnn", "resnet-basic"])
def test_l18_is_violated_by_a_rule_that_is_not_elementwise(network):
    """On the residual sum the engine applies v to the sum's weights (1, 1): v = 0, the column
    is dead and the merge sends everything to ⊥; the reference applies it to [I I]."""
    result = _modularity(network, MeanFreeZero())
    assert result.holds is False and result.deviation > 1e-3, str(result)


def _halve_the_engines_columns(monkeypatch) -> None:
    """A deliberately broken engine path: nrm's rule arithmetic (:meth:`nrm.rules.Rule.column`,
    which the engine calls for a rule with several shares) halves every scale and sends the
    other half to ⊥. Columns still sum to one, so L1 cannot see it; the explicit reference
    derives the user rule's kernel without calling ``Rule.column``, so L18 does."""
    original = Rule.column

    def halved(self, ops, contributions, biases, **kwargs):
        scales, _ = original(self, ops, contributions, biases, **kwargs)
        scales = tuple(0.5 * s for s in scales)
        real = sum(s * z for s, z in zip(scales, contributions))
        return scales, 1 - real

    monkeypatch.setattr(Rule, "column", halved)


@pytest.mark.parametrize("network", ["residual_mlp", "residual_cnn", "resnet-basic"])
def test_l18_catches_a_broken_engine_path_for_a_user_rule(network, monkeypatch):
    assert _modularity(network, EpsilonPlusMix()).holds is True
    _halve_the_engines_columns(monkeypatch)
    result = _modularity(network, EpsilonPlusMix())
    assert result.holds is False and result.deviation > 1e-3, str(result)


def test_check_rule_checks_l18_for_a_user_rule(monkeypatch):
    report = check_rule(ZeroByParts(), only=["L18"], max_examples=5, symbolic=False)
    v = report.verdict("L18")
    assert v.status == HELD and v.cases > 0, str(report)
    _halve_the_engines_columns(monkeypatch)
    report = check_rule(EpsilonPlusMix(), only=["L18"], max_examples=5, symbolic=False)
    assert report.verdict("L18").status == VIOLATED, str(report)
    assert report.exit_code == 1


def test_check_rule_l18_is_not_applicable_to_a_relevance_reading_rule():
    v = check_rule(RelevanceGatedZPlus(), only=["L18"], max_examples=5, symbolic=False).verdict("L18")
    assert v.status == NOT_APPLICABLE and "reads the incoming relevance" in v.detail
