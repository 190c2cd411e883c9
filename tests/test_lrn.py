"""Local renormalization layers (nrm/lrn.py): the map, its kernels, and the laws they keep
or break, at the level of one layer (the engine integration is tested elsewhere).

Float64 throughout. The LRN constants are chosen strong (α of order 1) so that the
normalization is far from a constant factor and the expansions differ measurably.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nrm.errors import RuleAssignmentError, RuleParameterError, ShapeError, UnsupportedModuleError
from nrm.lrn import (
    LRNIdentity,
    LRNMap,
    LRNTaylor,
    expansion_of,
    lrn_forward,
    lrn_map,
)
from nrm.ops import TORCH
from nrm.rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox, Zero, ZPlus, ones
from nrm_verify.zoo.models import alexnet_lrn, seeded_image

DT = torch.float64
EXPANSIONS = ("gradient", "root", "identity")
SHAPES = ((2, 7, 3), (2, 6, 3, 2), (1, 5, 2, 2, 2))  # Conv1d-, Conv2d- and Conv3d-shaped inputs
SIZES = (1, 2, 3, 5, 8)  # even sizes have an asymmetric window; 8 > C covers the whole channel range


def lrn(size=5, alpha=0.9, beta=0.75, k=1.2):
    return nn.LocalResponseNorm(size, alpha=alpha, beta=beta, k=k)


def draw(shape, seed, nonnegative=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g, dtype=DT) * 1.5
    return a.clamp(min=0) + 0.05 if nonnegative else a


def ref(module, a):
    return F.local_response_norm(a, module.size, module.alpha, module.beta, module.k)


# -- the layer's kernel, built the way nrm/engine.py prepares one ----------------------
def columns(rule, lmap: LRNMap, a: torch.Tensor):
    """(shares, qbot) as the engine's ``_prepare``: per share its scale and its
    (u, modified weight) parts; qbot = q(⊥ | k)."""
    contributions, biases, parts_of = [], [], []
    for share in rule.shares():
        z, parts = None, []
        for part in share.parts:
            u = part.input(TORCH, a)
            w = lmap.structured(part.weight(TORCH, lmap.weight))
            term = lmap.forward(u, w)
            z = term if z is None else z + term
            parts.append((None if part.input is ones else u, w))
        bias = lmap.bias_for(z)
        contributions.append(z)
        biases.append(None if share.bias is None else share.bias(TORCH, bias))
        parts_of.append(parts)
    scales, qbot = rule.column(TORCH, tuple(contributions), tuple(biases))
    return list(zip(scales, parts_of)), qbot


def kernel(rule, lmap: LRNMap, a: torch.Tensor):
    """Dense Q (B, N_in, N_out) with Q[b, j, k] = q(j | k), and q(⊥ | k) (B, N_out).

    Built downwards, as the engine sends relevance: every unit vector e_k goes through
    u ⊙ Wᵀ(scale ⊙ e_k) (the map's transpose, not its forward)."""
    shares, qbot = columns(rule, lmap, a)
    B, shape = a.shape[0], tuple(a.shape[1:])
    n = math.prod(shape)
    eye = torch.eye(n, dtype=DT).reshape((n, 1) + shape).expand((n, B) + shape)
    total = torch.zeros((n, B) + shape, dtype=DT)
    for scale, parts in shares:
        g = (eye * scale).reshape((n * B,) + shape)
        for u, w in parts:
            t = lmap.transpose(g, w, shape).reshape((n, B) + shape)
            total += t if u is None else t * u
    Q = total.reshape(n, B, n).permute(1, 2, 0)  # [b, j, k]
    return Q, qbot.reshape(B, n)


def gradient_x_input_at(module, a, head):
    """For f(b) = Σ_k head_k tanh(b_k) + ½ Σ b_k² at b = LRN(a): m_out = b ∂f/∂b / f and
    the Gradient × Input marginal a ∂f/∂a / f of the layer's input."""
    x = a.clone().requires_grad_(True)
    b = ref(module, x)
    f = ((head * torch.tanh(b)).flatten(1).sum(1) + 0.5 * (b * b).flatten(1).sum(1))
    gb, = torch.autograd.grad(f.sum(), b, retain_graph=True)
    ga, = torch.autograd.grad(f.sum(), x)
    fv = f.detach().view((-1,) + (1,) * (a.dim() - 1))
    return (b.detach() * gb / fv), (a * ga / fv)


def down(Q, m_out):
    """m_in(j) = Σ_k q(j|k) m_out(k), per sample."""
    B = Q.shape[0]
    return torch.einsum("bjk,bk->bj", Q, m_out.reshape(B, -1))


ALL_RULES = [
    Zero(), Epsilon(0.1), Epsilon(0.1, stabilizer_sign="unsigned"), Zero(leak="renormalize"),
    Gamma(0.25), ZPlus(), AlphaBeta(2, 1), AlphaBeta(1, 0), WSquare(), WSquare(bias=True), Flat(),
    ZBox(-3.0, 3.0), LRNTaylor(), LRNTaylor(0.05), LRNTaylor(expansion="gradient"), LRNTaylor(leak="renormalize"),
    LRNIdentity(),
]


# -- the map ---------------------------------------------------------------------------
@pytest.mark.parametrize("expansion", EXPANSIONS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_plus_residual_is_the_layer(shape, size, expansion):
    module = lrn(size)
    a = draw(shape, seed=size)
    m = lrn_map(module, a, expansion)
    b = ref(module, a)
    assert torch.allclose(m.forward(a, m.weight) + m.bias_for(b), b, rtol=0, atol=1e-14)
    assert torch.equal(m.output, b)  # the output handed to the engine is torch's, bit for bit
    assert m.weight.shape == (shape[0], shape[1], size) + shape[2:]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gradient_weight_is_the_jacobian_band(shape, size):
    """W_jk = ∂b_k/∂a_j on the band |j − k| within the window, at the same position; the
    autograd Jacobian is zero everywhere else (across positions and outside the window)."""
    module = lrn(size)
    a = draw(shape, seed=10 + size)
    m = lrn_map(module, a, "gradient")
    C, spatial = shape[1], shape[2:]
    n = math.prod(shape[1:])
    dense = m.dense()
    lo, hi = size // 2, (size - 1) // 2
    for s in range(shape[0]):
        jac = torch.autograd.functional.jacobian(lambda x: ref(module, x[None])[0], a[s]).reshape(n, n)  # [k, j]
        assert torch.allclose(dense[s], jac.T, rtol=1e-12, atol=1e-15)
        idx = torch.arange(n).reshape((C,) + spatial)
        chan = (idx // math.prod(spatial)).flatten()
        pos = (idx % math.prod(spatial)).flatten()
        offset = chan[None, :] - chan[:, None]  # [k, j] = j − k
        band = (pos[None, :] == pos[:, None]) & (offset >= -lo) & (offset <= hi)
        assert torch.count_nonzero(jac[~band]) == 0
        for t in range(size):  # the stored band, slot by slot
            d = t - lo
            for k in range(C):
                j = k + d
                got = m.weight[s, k, t]
                if 0 <= j < C:
                    want = torch.stack([jac[k * math.prod(spatial) + p, j * math.prod(spatial) + p]
                                        for p in range(math.prod(spatial))]).reshape(spatial)
                    assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)
                else:
                    assert torch.count_nonzero(got) == 0 and m.mask[0, k, t].max() == 0


@pytest.mark.parametrize("rows", (1, 3))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_transpose_is_the_adjoint_of_forward(shape, size, rows):
    """⟨forward(x, W), g⟩ = ⟨x, transpose(g, W)⟩ for any weight W of the band's shape,
    with rows·B stacked rows (the engine's K events × B samples)."""
    module = lrn(size)
    a = draw(shape, seed=20 + size)
    m = lrn_map(module, a, "gradient")
    g0 = torch.Generator().manual_seed(size)
    w = m.structured(torch.randn(m.weight.shape, generator=g0, dtype=DT))
    x = torch.randn((rows * shape[0],) + shape[1:], generator=g0, dtype=DT)
    g = torch.randn((rows * shape[0],) + shape[1:], generator=g0, dtype=DT)
    lhs = (m.forward(x, w) * g).sum()
    rhs = (x * m.transpose(g, w, shape[1:])).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-13, atol=1e-13)
    # and each row uses its own sample's weights: row i ↔ sample i mod B
    one = m.forward(x[: shape[0]], w)
    assert torch.allclose(m.forward(x, w)[: shape[0]], one, rtol=0, atol=0)


def test_root_expansion_terms():
    """a_k W_kk = b_k(z⁽ᵏ⁾) (the neighbours removed); off the diagonal W is the Jacobian."""
    module = lrn(5)
    a = draw((2, 7, 3, 2), seed=3)
    root, grad = lrn_map(module, a, "root"), lrn_map(module, a, "gradient")
    alone = a[:, :, None] * torch.eye(7, dtype=DT)[None, :, :, None, None]  # [b, k, j]: only channel k kept
    b_alone = torch.stack([ref(module, alone[:, k])[:, k] for k in range(7)], 1)
    assert torch.allclose(a * root.weight[:, :, 2], b_alone, rtol=1e-14, atol=1e-15)
    off = torch.ones(5, dtype=torch.bool)
    off[2] = False
    assert torch.equal(root.weight[:, :, off], grad.weight[:, :, off])


def test_gradient_residual_closed_form():
    """r_k = b_k − Σ_j a_j J_kj = 2β b_k (S_k − κ) / S_k (the Euler defect of the layer)."""
    module = lrn(5, alpha=0.9, beta=0.75, k=1.2)
    a = draw((2, 7, 3, 2), seed=4)
    m = lrn_map(module, a, "gradient")
    b = ref(module, a)
    S = (a / b).pow(1 / 0.75)  # b = a S^(−β)
    assert torch.allclose(m.bias, 2 * 0.75 * b * (S - 1.2) / S, rtol=1e-10, atol=1e-14)


def test_identity_map():
    module = lrn(5)
    a = draw((2, 6, 3), seed=5)
    m = lrn_map(module, a, "identity")
    assert torch.equal(m.dense(), torch.eye(18, dtype=DT).expand(2, 18, 18))
    assert torch.allclose(m.bias, ref(module, a) - a, rtol=0, atol=1e-15)


# -- kernels: column-stochastic (L1) --------------------------------------------------
@pytest.mark.parametrize("rule", ALL_RULES, ids=repr)
@pytest.mark.parametrize("seed", range(3))
def test_columns_sum_to_one_with_the_absorber(rule, seed):
    nonneg = rule.requires_nonnegative_input or isinstance(rule, ZBox)
    module = lrn(5 if seed != 1 else 4)
    a = draw((2, 6, 2, 2), seed=30 + seed, nonnegative=nonneg)
    m = lrn_map(module, a, expansion_of(rule))
    Q, qbot = kernel(rule, m, a)
    assert torch.isfinite(Q).all() and torch.isfinite(qbot).all()
    assert torch.allclose(Q.sum(1) + qbot, torch.ones_like(qbot), rtol=0, atol=1e-12)
    if rule.leak == "renormalize":
        assert torch.count_nonzero(qbot) == 0


def test_rule_kernels_match_their_definitions():
    """Zero on the Jacobian: q(j|k) = a_j J_kj / b_k, q(⊥|k) = r_k / b_k; LRNTaylor on the root
    expansion: T_jk / b_k; with leak="renormalize": T_jk / Σ_i T_ik (the paper's Σ v = 1)."""
    module = lrn(5)
    a = draw((1, 6, 2, 2), seed=6)
    b = ref(module, a).reshape(1, -1)
    for rule, expansion in ((Zero(), "gradient"), (LRNTaylor(), "root")):
        m = lrn_map(module, a, expansion_of(rule))
        assert m.expansion == expansion
        T = a.reshape(1, -1, 1) * m.dense()
        Q, qbot = kernel(rule, m, a)
        assert torch.allclose(Q, T / b[:, None, :], rtol=1e-12, atol=1e-14)
        assert torch.allclose(qbot, m.bias.reshape(1, -1) / b, rtol=1e-12, atol=1e-14)
    Q, qbot = kernel(LRNTaylor(leak="renormalize"), lrn_map(module, a, "root"), a)
    T = a.reshape(1, -1, 1) * lrn_map(module, a, "root").dense()
    assert torch.allclose(Q, T / T.sum(1, keepdim=True), rtol=1e-12, atol=1e-14)


def test_identity_rule_is_the_identity_kernel():
    module = lrn(5)
    a = draw((2, 6, 2, 2), seed=7)
    Q, qbot = kernel(LRNIdentity(), lrn_map(module, a, expansion_of(LRNIdentity())), a)
    assert torch.equal(Q, torch.eye(24, dtype=DT).expand(2, 24, 24))
    assert torch.count_nonzero(qbot) == 0


# -- laws at the layer ---------------------------------------------------------------
def test_L9_gradient_expansion_is_gradient_x_input():
    """LRP-0 on the linearization, residual to ⊥: m_in = Q m_out equals Gradient × Input
    exactly, given that m_out is Gradient × Input at the layer's output."""
    module = lrn(5)
    for seed in range(4):
        a = draw((2, 7, 3, 2), seed=40 + seed)
        head = draw((2, 7, 3, 2), seed=140 + seed)
        m_out, gi = gradient_x_input_at(module, a, head)
        Q, _ = kernel(Zero(), lrn_map(module, a, "gradient"), a)
        assert torch.allclose(down(Q, m_out), gi.reshape(2, -1), rtol=1e-10, atol=1e-12)


def test_L9_breaks_for_the_root_and_identity_rules():
    """The paper's Taylor rule differs from Gradient × Input on the diagonal only:
    m_in(j) − GI(j) = a_j (W^root_jj − J_jj) ∂f/∂b_j / f; the identity rule by b ∂f/∂b − a Jᵀ∂f/∂b."""
    module = lrn(5)
    a = draw((2, 7, 3, 2), seed=50)
    head = draw((2, 7, 3, 2), seed=150)
    m_out, gi = gradient_x_input_at(module, a, head)
    b = ref(module, a)
    grad_f_b = m_out / b  # ∂f/∂b / f
    root, grad = lrn_map(module, a, "root"), lrn_map(module, a, "gradient")
    Q, _ = kernel(LRNTaylor(), root, a)
    defect = down(Q, m_out) - gi.reshape(2, -1)
    want = (a * (root.weight[:, :, 2] - grad.weight[:, :, 2]) * grad_f_b).reshape(2, -1)
    assert torch.allclose(defect, want, rtol=1e-9, atol=1e-12)
    assert defect.abs().max() > 1e-2 * gi.abs().max()
    Q, _ = kernel(LRNIdentity(), lrn_map(module, a, "identity"), a)
    defect = down(Q, m_out) - gi.reshape(2, -1)
    assert torch.allclose(down(Q, m_out), m_out.reshape(2, -1), rtol=0, atol=0)
    assert defect.abs().max() > 1e-2 * gi.abs().max()


def test_root_expansion_is_exact_when_the_neighbours_are_silent():
    """If no other channel of W(k) fires, b_k = b_k(z⁽ᵏ⁾): the paper's rule absorbs nothing
    and keeps the relevance at k; the Jacobian's residual 2β b (S − κ)/S is still there."""
    module = lrn(3)
    a = torch.zeros(1, 9, 2, dtype=DT)
    a[0, 1], a[0, 5] = torch.tensor([1.3, -0.7], dtype=DT), torch.tensor([2.1, 0.4], dtype=DT)  # 4 apart > n
    root = lrn_map(module, a, "root")
    assert torch.allclose(root.bias, torch.zeros_like(root.bias), rtol=0, atol=1e-15)
    Q, qbot = kernel(LRNTaylor(), root, a)
    live = a.reshape(-1) != 0
    assert torch.allclose(Q[0][:, live], torch.eye(18, dtype=DT)[:, live], rtol=0, atol=1e-15)
    assert qbot[0, live].abs().max() < 1e-15
    assert lrn_map(module, a, "gradient").bias.reshape(-1)[live].abs().min() > 1e-3


@pytest.mark.parametrize("expansion", ("gradient", "root"))
def test_small_alpha_tends_to_the_identity_rule(expansion):
    """α → 0 makes LRN a constant factor κ^(−β): both Taylor kernels tend to δ_jk with
    nothing absorbed, at rate O(α)."""
    a = draw((1, 6, 2, 2), seed=8)
    errors = []
    for alpha in (1e-4, 1e-6):
        module = lrn(5, alpha=alpha)
        Q, qbot = kernel(Zero(), lrn_map(module, a, expansion), a)
        errors.append(max((Q[0] - torch.eye(24, dtype=DT)).abs().max().item(), qbot.abs().max().item()))
    assert errors[0] < 1e-2
    assert 30 < errors[0] / errors[1] < 300  # linear in α


def test_epsilon_tends_to_zero():
    """L10 on the layer: LRNTaylor(ε) → LRNTaylor(0) as ε → 0, error O(ε / |b_k|)."""
    module = lrn(5)
    a = draw((1, 6, 2, 2), seed=9)
    m = lrn_map(module, a, "root")
    Q0, q0 = kernel(LRNTaylor(), m, a)
    b_min = ref(module, a).abs().min()
    for eps in (1e-3, 1e-6):
        Q, q = kernel(LRNTaylor(eps), m, a)
        assert (Q - Q0).abs().max() <= 10 * eps / b_min * Q0.abs().max()


def test_zplus_keeps_each_neuron_on_itself_for_nonnegative_input():
    """For a ≥ 0 every off-diagonal J_kj ≤ 0 (neighbours only inhibit): z⁺ keeps the diagonal,
    so its kernel is diagonal, the rest going to ⊥."""
    module = lrn(5)
    a = draw((2, 6, 2, 2), seed=11, nonnegative=True)
    m = lrn_map(module, a, "gradient")
    off = torch.ones(5, dtype=torch.bool)
    off[2] = False
    assert (m.weight[:, :, off] <= 0).all()
    Q, qbot = kernel(ZPlus(), m, a)
    eye = torch.eye(24, dtype=torch.bool)
    assert torch.count_nonzero(Q[:, ~eye]) == 0
    assert (Q[:, eye] >= 0).all() and (Q[:, eye] <= 1).all()


def test_wsquare_depends_on_the_input_on_lrn_flat_does_not():
    """L14 fails for w² on an LRN layer (its weights are the input's Jacobian); flat holds
    and gives 1/|W(k)|."""
    module = lrn(5)
    a1, a2 = draw((1, 6, 2, 2), seed=12), draw((1, 6, 2, 2), seed=13)
    Qw1, _ = kernel(WSquare(), lrn_map(module, a1), a1)
    Qw2, _ = kernel(WSquare(), lrn_map(module, a2), a2)
    assert (Qw1 - Qw2).abs().max() > 1e-3
    Qf1, _ = kernel(Flat(), lrn_map(module, a1), a1)
    Qf2, _ = kernel(Flat(), lrn_map(module, a2), a2)
    assert torch.equal(Qf1, Qf2)
    fan_in = torch.tensor([3, 4, 5, 5, 4, 3], dtype=DT)  # window of 5 clipped at the channel ends
    nonzero = Qf1[0] != 0
    assert torch.allclose(Qf1[0].sum(0), torch.ones(24, dtype=DT))
    assert torch.equal(nonzero.sum(0).reshape(6, 4)[:, 0].to(DT), fan_in)


# -- the engine helper, rules' names, errors --------------------------------------------
def test_lrn_forward_output_equals_the_module_without_hooks():
    module = lrn(5)
    calls = []
    handle = module.register_forward_hook(lambda *args: calls.append(1))
    pre = module.register_forward_pre_hook(lambda *args: calls.append(2))
    try:
        a = draw((2, 7, 3, 2), seed=14)
        for rule in (None, Zero(), LRNTaylor(), LRNIdentity(), LRNTaylor(expansion="gradient")):
            lmap, out = lrn_forward(module, a, rule)
            assert calls == []
            assert lmap.expansion == expansion_of(rule)
            with torch.no_grad():
                expected = module(a)
            calls.clear()
            assert torch.allclose(out, expected, rtol=0, atol=1e-12)
            assert torch.allclose(lmap.forward(a, lmap.weight) + lmap.bias, expected, rtol=0, atol=1e-12)
    finally:
        handle.remove()
        pre.remove()


def test_expansion_of_rules():
    assert expansion_of(None) == "gradient" and expansion_of(Epsilon(0.1)) == "gradient"
    assert expansion_of(LRNTaylor()) == "root"
    assert expansion_of(LRNTaylor(expansion="gradient")) == "gradient"
    assert expansion_of(LRNIdentity()) == "identity"
    assert LRNIdentity.lrn_only and not LRNIdentity.depends_on_input



def test_an_lrn_only_rule_on_another_layer_is_refused():
    """LRNIdentity would act as Flat on a convolution; nrm.explain refuses it there, naming
    the layer, whether it is the one rule, keyed by type or keyed by name."""
    import nrm

    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.LocalResponseNorm(3), nn.Flatten(),
                          nn.Linear(12, 2)).to(DT).eval()
    x = seeded_image(2, channels=2, dtype=DT)
    others = {nn.Linear: Zero()}
    for rules in (LRNIdentity(), {nn.Conv2d: LRNIdentity(), **others}, {"0": LRNIdentity(), nn.Conv2d: Zero(),
                                                                           nn.LocalResponseNorm: Zero(), **others}):
        with pytest.raises(RuleAssignmentError, match=r"given to '0' \(Conv2d\); key it by nn.LocalResponseNorm"):
            nrm.explain(model, x, target=0, rules=rules)
    m = nrm.explain(model, x, target=0, rules={nn.LocalResponseNorm: LRNIdentity(), nn.Conv2d: Zero(), **others})
    assert m.rule("2") == LRNIdentity()

def test_rule_reprs_and_equality():
    assert repr(LRNTaylor()) == "nrm.lrn.LRNTaylor(0.0)"
    assert repr(LRNTaylor(0.1, expansion="gradient", leak="renormalize")) == (
        "nrm.lrn.LRNTaylor(0.1, expansion='gradient', leak='renormalize')")
    assert repr(LRNIdentity()) == "nrm.lrn.LRNIdentity()"
    assert LRNTaylor(0.1) == LRNTaylor(0.1) and LRNTaylor(0.1) != LRNTaylor(0.2)
    assert LRNTaylor() != LRNTaylor(expansion="gradient")


def test_bad_inputs_raise_clear_errors():
    module = lrn(5)
    with pytest.raises(UnsupportedModuleError, match="LocalResponseNorm"):
        lrn_map(nn.ReLU(), draw((1, 4, 2), seed=0))
    with pytest.raises(ShapeError, match="spatial"):
        lrn_map(module, torch.ones(2, 4, dtype=DT))
    with pytest.raises(ShapeError, match="floating"):
        lrn_map(module, torch.ones(2, 4, 3, dtype=torch.int64))
    with pytest.raises(RuleParameterError, match="expansion"):
        lrn_map(module, draw((1, 4, 2), seed=0), "taylor")
    with pytest.raises(RuleParameterError, match="epsilon"):
        LRNTaylor(-1.0)
    with pytest.raises(RuleParameterError, match="LRNIdentity"):
        LRNTaylor(expansion="identity")
    m = lrn_map(module, draw((2, 4, 3), seed=0))
    with pytest.raises(ShapeError, match="batch of 2"):
        m.forward(torch.ones(3, 4, 3, dtype=DT), m.weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    module = lrn(5)
    a = draw((2, 7, 3, 2), seed=15)
    for expansion in EXPANSIONS:
        cpu, gpu = lrn_map(module, a, expansion), lrn_map(module, a.cuda(), expansion)
        assert gpu.weight.device.type == "cuda" and gpu.mask.device.type == "cuda"
        assert torch.allclose(gpu.weight.cpu(), cpu.weight, rtol=1e-12, atol=1e-15)
        assert torch.allclose(gpu.bias.cpu(), cpu.bias, rtol=1e-12, atol=1e-15)
        g = draw((6, 7, 3, 2), seed=16)
        assert torch.allclose(gpu.transpose(g.cuda(), gpu.weight, (7, 3, 2)).cpu(),
                              cpu.transpose(g, cpu.weight, (7, 3, 2)), rtol=1e-12, atol=1e-14)


def test_float32_map_is_float32():
    module = lrn(5)
    a = draw((2, 7, 3), seed=17).float()
    m = lrn_map(module, a)
    assert m.weight.dtype == m.bias.dtype == m.mask.dtype == torch.float32
    assert torch.allclose(m.forward(a, m.weight) + m.bias, ref(module, a), rtol=0, atol=1e-5)


# -- the AlexNet builder ------------------------------------------------------------------
def test_alexnet_lrn_layout_and_determinism():
    state = torch.random.get_rng_state()
    m1 = alexnet_lrn(seed=3, num_classes=7, size=5, width=0.0625, alpha=1.0, dtype=DT)
    m2 = alexnet_lrn(seed=3, num_classes=7, size=5, width=0.0625, alpha=1.0, dtype=DT)
    m3 = alexnet_lrn(seed=4, num_classes=7, size=5, width=0.0625, alpha=1.0, dtype=DT)
    assert torch.equal(torch.random.get_rng_state(), state)
    names = dict(m1.named_modules())
    for name in ("features.2", "features.6"):
        lrn_module = names[name]
        assert isinstance(lrn_module, nn.LocalResponseNorm)
        assert (lrn_module.size, lrn_module.alpha, lrn_module.beta, lrn_module.k) == (5, 1.0, 0.75, 2.0)
    assert isinstance(names["features.0"], nn.Conv2d) and isinstance(names["features.1"], nn.ReLU)
    assert isinstance(names["features.4"], nn.Conv2d) and isinstance(names["features.5"], nn.ReLU)
    assert isinstance(names["features.3"], nn.MaxPool2d) and isinstance(names["features.7"], nn.MaxPool2d)
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in m1.modules()) == 2
    assert not any(m.training for m in m1.modules())
    for (n1, p1), (_, p2) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p1, p2), n1
        assert p1.dtype == DT
    assert any(not torch.equal(p1, p3) for p1, p3 in zip(m1.parameters(), m3.parameters()))
    x = seeded_image(64, dtype=DT)
    with torch.no_grad():
        y = m1(x)
    assert y.shape == (1, 7) and torch.isfinite(y).all() and y.abs().max() > 0


def test_alexnet_lrn_full_width_shapes():
    m = alexnet_lrn(seed=0, num_classes=1000)
    convs = [mod for mod in m.features if isinstance(mod, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 192, 384, 256, 256]
    assert m.classifier[1].in_features == 256 * 6 * 6 and m.classifier[6].out_features == 1000
    with pytest.raises(ValueError, match="size"):
        alexnet_lrn(size=0)


# -- through nrm.explain (the engine's integration, nrm/graph.py linear_map(a=…)) --------
def test_explain_alexnet_lrn_laws_end_to_end(single_thread):
    """On AlexNet with LRN (α = 1): LRP-0 everywhere (the Jacobian expansion on LRN) gives
    Gradient × Input at the input (L9); the paper's Taylor rule and the identity rule keep
    L1 at every layer and break L9."""
    import nrm

    model = alexnet_lrn(seed=1, num_classes=5, width=0.125, alpha=1.0, dtype=DT)
    x = seeded_image(67, dtype=DT, batch=2)
    xi = x.clone().requires_grad_(True)
    f = model(xi)[:, 2]
    g, = torch.autograd.grad(f.sum(), xi)
    gi = (xi * g).detach() / f.detach().view(-1, 1, 1, 1)
    others = {nn.Conv2d: Zero(), nn.Linear: Zero(), nn.AdaptiveAvgPool2d: Zero()}
    for lrn_rule, l9 in ((Zero(), True), (LRNTaylor(), False), (LRNIdentity(), False)):
        m = nrm.explain(model, x, target=2, rules={nn.LocalResponseNorm: lrn_rule, **others})
        assert m.rule("features.2") == lrn_rule and m.rule("features.6") == lrn_rule
        for layer in m.layers:
            total = m.marginal(layer).flatten(1).sum(1) + m.absorbed(layer)
            assert torch.allclose(total, torch.ones(2, dtype=DT), rtol=0, atol=1e-12), (lrn_rule, layer)
        dev = ((m.marginal("input") - gi).abs().max() / gi.abs().max()).item()
        assert (dev < 1e-12) if l9 else (dev > 1e-2), (lrn_rule, dev)
