"""DIG's own GNN-LRP (``dig/xgraph/method/gnn_lrp.py``, dive-into-graphs 1.1.0) run beside
PyG 2.8.1, its code unchanged.

``pip install --no-deps dive-into-graphs==1.1.0`` installs DIG's files; ``import
dig.xgraph.method.gnn_lrp`` then fails three ways, none of them on GNN-LRP's code path:

1. ``dig/xgraph/method/__init__.py`` imports every explainer; ``deeplift`` needs captum's
   ``ExpansionTypes`` (absent from captum 0.9.0), ``subgraphx`` and ``pgexplainer`` rdkit. It
   is skipped: ``dig.xgraph.method`` is registered as a bare package (its ``__path__`` only),
   so ``gnn_lrp`` and the one module it imports from there, ``base_explainer``, load from
   their files as they are.
2. ``dig/xgraph/models/models.py`` imports ``SparseTensor`` from the compiled
   ``torch_sparse`` and uses it only in ``isinstance(edge_index, SparseTensor)`` branches;
   ``edge_index`` is a Tensor here, so those branches are not taken. Shim: a class that
   records and raises when it is constructed (an ``isinstance`` test against it is False, as
   it is against the real class for a Tensor).
3. ``base_explainer.py`` imports ``rdkit.Chem``; ``ExplainerBase.__init__`` calls
   ``Chem.GetPeriodicTable()`` and keeps its ``GetElementSymbol``, which only molecule drawings
   (``visualize_graph`` with ``molecule=True``) call. Shim: ``GetPeriodicTable`` returns an
   object whose ``GetElementSymbol`` records and raises.

The shims are in ``sys.modules`` only while DIG's modules import (then removed, so that
nothing else sees them); :data:`CALLED` lists every call of a shim that raises (tests
assert it stays empty).

DIG's model layers (``dig.xgraph.models.GCNConv``, ``GINConv``) override ``propagate`` with
PyG < 2.5's private names, renamed since (not an import failure: a call-time one). Adapters,
on DIG's two classes and PyG's ``Inspector``, give the old names to the new functions:
``__check_input__`` = ``MessagePassing._check_input``, ``__collect__`` =
``MessagePassing._collect``, ``__user_args__`` = ``_user_args``, ``Inspector.distribute`` =
``Inspector.collect_param_data`` (same arguments, same results).

One more difference changes what DIG reads, silently: since PyG 2.1 a layer aggregates
through a child module (``aggr_module``, a ``SumAggregation``). DIG's ``extract_step`` hooks
every leaf module and cuts the walk steps at each message-passing layer, so the aggregation
of layer l + 1 (it fires before its layer) joins layer l's step: DIG would run
``GraphSequential(conv, relu, aggr)`` as GCN layer l's standard output (GIN's steps keep only
the conv, so GIN is not touched). Adapter: DIG's two classes aggregate as PyG 2.0's
``MessagePassing.aggregate`` did, ``scatter(inputs, index, dim=node_dim, dim_size=dim_size,
reduce=aggr)``, without the module. That the adapters are faithful is tested: DIG's models
equal PyG's ``GCNConv``/``GINConv`` with the same weights to 1e-12, and DIG's walk steps are
exactly [conv, ReLU] (GCN) and [conv] (GIN).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

CALLED: list[str] = []


def _shim_torch_sparse() -> types.ModuleType:
    module = types.ModuleType("torch_sparse")

    class SparseTensor:
        """Shim: DIG only tests isinstance against it; constructing one is a call we do not serve."""

        def __init__(self, *args, **kwargs):
            CALLED.append("torch_sparse.SparseTensor")
            raise AssertionError("DIG constructed a torch_sparse.SparseTensor: the shim does not serve it")

    module.SparseTensor = SparseTensor
    return module


def _shim_rdkit() -> tuple[types.ModuleType, types.ModuleType]:
    rdkit, chem = types.ModuleType("rdkit"), types.ModuleType("rdkit.Chem")

    class PeriodicTable:
        def GetElementSymbol(self, *args):  # noqa: N802 (rdkit's name)
            CALLED.append("rdkit.Chem.PeriodicTable.GetElementSymbol")
            raise AssertionError("DIG drew a molecule: the rdkit shim does not serve element symbols")

    chem.GetPeriodicTable = PeriodicTable
    rdkit.Chem = chem
    return rdkit, chem


def _adapt(models) -> None:
    """PyG < 2.5's MessagePassing names, used by DIG's propagate, given PyG 2.8's functions."""
    from torch_geometric.inspector import Inspector
    from torch_geometric.nn import MessagePassing
    from torch_geometric.utils import scatter

    def aggregate(self, inputs, index, ptr=None, dim_size=None):
        """PyG 2.0's MessagePassing.aggregate: a scatter, no child module for DIG to hook."""
        return scatter(inputs, index, dim=self.node_dim, dim_size=dim_size, reduce=self.aggr)

    for cls in (models.GCNConv, models.GINConv):
        cls.aggregate = aggregate
        cls.__check_input__ = MessagePassing._check_input
        cls.__collect__ = MessagePassing._collect
        cls.__user_args__ = property(lambda self: self._user_args)
    if not hasattr(Inspector, "distribute"):
        Inspector.distribute = Inspector.collect_param_data


def load():
    """(DIG's ``gnn_lrp`` module, DIG's ``xgraph.models.models`` module), imported from the
    installed files with the shims and adapters above; ImportError when DIG is not installed."""
    import torch_geometric  # noqa: F401  (imported before the shims: PyG probes torch_sparse itself)

    spec = importlib.util.find_spec("dig")
    if spec is None or spec.origin is None:
        raise ImportError("dive-into-graphs is not installed (pip install --no-deps dive-into-graphs==1.1.0)")
    root = Path(spec.origin).parent
    if "dig.xgraph.method" not in sys.modules:
        importlib.import_module("dig.xgraph")
        bare = types.ModuleType("dig.xgraph.method")
        bare.__path__ = [str(root / "xgraph" / "method")]
        sys.modules["dig.xgraph.method"] = bare
    shims = {}
    if importlib.util.find_spec("torch_sparse") is None:
        shims["torch_sparse"] = _shim_torch_sparse()
    if importlib.util.find_spec("rdkit") is None:
        shims["rdkit"], shims["rdkit.Chem"] = _shim_rdkit()
    added = [name for name in shims if name not in sys.modules]
    sys.modules.update({name: shims[name] for name in added})
    try:
        gnn_lrp = importlib.import_module("dig.xgraph.method.gnn_lrp")
        models = importlib.import_module("dig.xgraph.models.models")
    finally:
        for name in added:
            sys.modules.pop(name, None)
    _adapt(models)
    return gnn_lrp, models
