"""What property checks are built from:

* :mod:`~nrm_verify.properties.strategies` — hypothesis strategies: networks, inputs, events,
  rules, cases (and networks around a layer kind's examples);
* :mod:`~nrm_verify.properties.checks` — which arguments each law check draws, and every law on
  one given case;
* :mod:`~nrm_verify.properties.codegen` — values as runnable Python (counterexample programs),
  and loading user objects (``module:object``, ``file.py:object``, rule specs);
* :mod:`~nrm_verify.properties.profiles` — the hypothesis profiles ``ci`` and ``thorough``;
* :mod:`~nrm_verify.properties.abbreviate` — long lists and messages, shortened for reports.
"""
