"""The reductions of a dataset run merge (issue 16, item 3): shards in any order and any merge
tree give the one-pass result — bitwise for counts, histograms, top-k and extremes; to
1e-12 relative (round-off of the pairwise formula) for means and variances, whose merge is
bitwise commutative."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nrm_verify.report.dataset import Extreme, Histogram, Moments, Reductions, TopK, merge_all

EDGES = np.linspace(-50.0, 50.0, 11)
K = 3


def reductions(values: np.ndarray, rows: np.ndarray) -> Reductions:
    c = values.shape[1]
    r = Reductions({"m": Moments((c,)), "h": Histogram(EDGES, (c,)), "t": TopK(c, K), "x": Extreme()})
    for name in ("m", "h"):
        r[name].add(values, rows)
    r["t"].add(values, rows)
    r["x"].add(values[:, 0], rows)
    return r


def tree_merge(parts: list[Reductions], draw_split) -> Reductions:
    """Merge by a random binary tree (the split points drawn)."""
    if len(parts) == 1:
        return parts[0]
    cut = draw_split(len(parts))
    return tree_merge(parts[:cut], draw_split).merge(tree_merge(parts[cut:], draw_split))


def exact_parts(r: Reductions) -> dict:
    d = r.to_dict()
    return {k: d[k] for k in ("h", "t", "x")}


values_strategy = st.integers(1, 4).flatmap(lambda c: st.lists(
    st.lists(st.floats(-60.0, 60.0, allow_nan=False, width=64), min_size=c, max_size=c), min_size=1, max_size=40))


@given(rows=values_strategy, data=st.data())
def test_shards_in_any_order_and_any_tree_give_the_one_pass_result(rows, data):
    values = np.asarray(rows)
    n = values.shape[0]
    index = np.arange(n)
    whole = reductions(values, index)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=6)) if n > 1 else [])
    shards = [s for s in np.split(index, cuts) if len(s)]
    order = data.draw(st.permutations(range(len(shards))))
    parts = [reductions(values[shards[i]], shards[i]) for i in order]
    merged = tree_merge(parts, lambda m: data.draw(st.integers(1, m - 1)))
    assert exact_parts(merged) == exact_parts(whole)  # bitwise: integer sums and selections
    m, w = merged["m"], whole["m"]
    assert m.count == w.count == n
    scale = 1.0 + np.abs(values).max()
    np.testing.assert_allclose(m.mean, values.mean(0), rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(m.variance, values.var(0), rtol=1e-12, atol=1e-12 * scale ** 2)


@given(a=values_strategy, b=values_strategy)
def test_moments_merge_commutes_bitwise(a, b):
    c = min(len(a[0]), len(b[0]))
    x, y = np.asarray(a)[:, :c], np.asarray(b)[:, :c]
    ma, mb = Moments((c,)), Moments((c,))
    ma.add(x)
    mb.add(y)
    ab, ba = ma.merge(mb), mb.merge(ma)
    assert ab.count == ba.count
    assert np.array_equal(ab.mean, ba.mean) and np.array_equal(ab.m2, ba.m2)


def test_topk_is_the_brute_force_selection_with_ties_to_the_smaller_row():
    values = np.array([[1.0, 5.0], [3.0, 5.0], [3.0, -1.0], [2.0, 5.0], [0.5, 4.0]])
    t = TopK(2, 3)
    t.add(values[2:], np.arange(2, 5))
    t.add(values[:2], np.arange(2))
    assert t.rows.tolist() == [[1, 2, 3], [0, 1, 3]]
    assert t.values.tolist() == [[3.0, 3.0, 2.0], [5.0, 5.0, 5.0]]


def test_fewer_samples_than_k_pads_and_the_json_form_keeps_only_the_seen():
    t = TopK(1, 4)
    t.add(np.array([[2.0], [7.0]]), np.array([10, 11]))
    assert t.to_dict()["rows"] == [[11, 10]]
    assert TopK.from_dict(t.to_dict()).rows.tolist() == [[11, 10, -1, -1]]


def test_the_json_form_reads_back_bitwise():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(17, 3)) * 1e3
    r = reductions(values, np.arange(17))
    back = Reductions.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back.to_dict() == r.to_dict()
    assert np.array_equal(back["m"].mean, r["m"].mean) and np.array_equal(back["m"].m2, r["m"].m2)


def test_histogram_counts_below_above_nan_and_the_closed_last_bin():
    h = Histogram([0.0, 1.0, 2.0])
    h.add(np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, np.nan]))
    assert h.counts.tolist() == [2, 2] and (int(h.below), int(h.above), int(h.nan)) == (1, 1, 1)


def test_extreme_prefers_nan_then_the_largest_then_the_smaller_row():
    e = Extreme()
    e.add(np.array([1.0, 3.0, 3.0]), np.array([5, 7, 6]))
    assert (e.value, e.row) == (3.0, 6)
    e.add(np.array([np.nan]), np.array([9]))
    assert np.isnan(e.value) and e.row == 9


def test_merging_different_layouts_is_refused():
    with pytest.raises(ValueError, match="another layout"):
        Moments((2,)).merge(Moments((3,)))
    with pytest.raises(ValueError, match="another layout"):
        Histogram([0, 1]).merge(Histogram([0, 2]))
    with pytest.raises(ValueError, match="different layouts"):
        Reductions({"a": Extreme()}).merge(Reductions({"b": Extreme()}))
    with pytest.raises(ValueError, match="finite"):
        Moments().add(np.array([np.nan]))
    with pytest.raises(ValueError, match="at least one"):
        merge_all([])
