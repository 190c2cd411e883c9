"""Run the proofs of the laws and write (or check) ``proofs/REPORT.md``.

    python -m nrm_verify.symbolic.prove              # run everything, write proofs/REPORT.md
    python -m nrm_verify.symbolic.prove --check      # regenerate in memory; exit 1 if a proof
                                                     # fails or the committed report differs
    python -m nrm_verify.symbolic.prove --law L9 --rule zero --arch 2-2-1   # a selection, printed

For a rule of your own, :func:`prove_rule` runs every law on the architectures and cases
of :mod:`~nrm_verify.symbolic.catalog` and returns the proofs (see
``examples/custom_rule_symbolic.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sympy as sp

from nrm.rules import Rule, ZBox, Zero
from nrm_verify.laws import catalogue
from nrm_verify.laws.catalogue import Law
from nrm_verify.laws.status import NOT_APPLICABLE, NOT_SETTLED, PROVED, REFUTED
from nrm_verify.symbolic.attention_proofs import proofs as attention_proofs
from nrm_verify.symbolic.catalog import ARCHITECTURES, CASES, RULES, Architecture, RuleSpec, SignCase
from nrm_verify.symbolic.derive import SymbolicMeasure
from nrm_verify.symbolic.laws import Claim, Subject
from nrm_verify.symbolic.ops import SymbolicSizeError
from nrm_verify.symbolic.proof import NotApplicable, Proof, ProofStep, point_text
from nrm_verify.symbolic.report import render
from nrm_verify.symbolic.subjects import CASE_C, subject, subjects

REPORT = Path(__file__).resolve().parents[2] / "proofs" / "REPORT.md"

@dataclass(frozen=True)
class Job:
    arch: Architecture
    spec: RuleSpec
    case: SignCase
    laws: tuple[str, ...]


def run_law(law: Law, s: Subject) -> list[Proof]:
    """One law on one subject: its claims as proofs (a refuted claim that is expected to
    fail stops at its first counterexample). A subject whose rule still branches on signs
    the assumptions leave open (after :data:`MAX_SPLITS` splits) is not attempted: the
    proof fails and names the branches, so that the missing assumptions can be added."""
    base = dict(law=law.key, rule=s.rule_title, arch=s.arch, case=s.case)
    open_signs = [f"{op}({x})" for _, op, x in s.m.undecided if op in ("sign", "pos", "neg", "abs")]
    if open_signs:
        note = ("the assumptions leave these branches of the rule open: " + "; ".join(open_signs[:4])
                + ("; …" if len(open_signs) > 4 else "")
                + ". Declare the signs they need (prove_rule(..., inputs='positive', signed_weights=True) or a "
                  "network of your own) and run again")
        return [Proof(**base, expect="holds", status=NOT_SETTLED, note=note)]
    try:
        claims = law.symbolic_function()(s)
    except NotApplicable as e:
        return [Proof(**base, expect=NOT_APPLICABLE, status=NOT_APPLICABLE, note=str(e))]
    out = []
    for claim in claims:
        p = _run_claim(claim, base, s)
        out.append(p)
    return out


def _run_claim(claim: Claim, base: dict, s: Subject) -> Proof:
    case = base["case"] + (f" — {claim.label}" if claim.label else "")
    p = Proof(**{**base, "case": case}, expect=claim.expect, note=claim.note)
    try:
        for thunk in claim.steps:
            step = thunk()
            p.steps.append(step)
            if step.status == REFUTED and claim.expect != "holds":
                break
    except Exception as e:  # a failure of the proof machinery is a failed proof, shown in the report
        p.steps.append(ProofStep(f"error: {type(e).__name__}: {e}", status=NOT_SETTLED,
                            residual=traceback.format_exc(limit=3)))
    p.settle()
    p.assumptions = s.m.assumptions()
    return p


def jobs(archs: Iterable[Architecture] = ARCHITECTURES, specs: Iterable[RuleSpec] = RULES,
         cases: Iterable[SignCase] = CASES, laws: Sequence[str] | None = None) -> list[Job]:
    """The suite: every architecture × rule × case, plus the boundary case C on 2-2-1."""
    keys = tuple(laws or [law.key for law in catalogue.symbolic_laws()])
    out = [Job(a, r, c, keys) for a in archs for r in specs for c in cases]
    boundary = tuple(k for k in keys if k in ("L12", "L13"))
    if boundary:
        for a in archs:
            if a.key != "2-2-1":
                continue
            for r in specs:
                if r.key in ("gamma", "zplus", "alphabeta"):
                    out.append(Job(a, r, CASE_C, boundary))
    return out


def unsettled(job: Job, why: str, laws: Sequence[str] | None = None) -> list[Proof]:
    """One failed proof per law of ``job`` that could not be attempted, saying why."""
    return [Proof(law=key, rule=job.spec.title, arch=job.arch.key, case=job.case.key, expect="holds",
                  status=NOT_SETTLED, note=why) for key in (laws if laws is not None else job.laws)]


def run_job(job: Job, deadline: float | None = None) -> list[Proof]:
    """Every law of the job on every sub-case of it. A kernel beyond the symbolic layer's
    size budget (:class:`~nrm_verify.symbolic.ops.SymbolicSizeError`) and a ``deadline``
    (``time.perf_counter()`` value) passed before a law is started give failed proofs
    that say so, never an exception."""
    try:
        cases = subjects(job.arch, job.spec, job.case)
    except SymbolicSizeError as e:
        return unsettled(job, f"not settled: {e}")
    out = []
    for s in cases:
        for law in catalogue.symbolic_laws():
            if law.key not in job.laws:
                continue
            if deadline is not None and time.perf_counter() > deadline:
                out += unsettled(job, "not proved within the time budget (the symbolic proofs were stopped)",
                                 [law.key])
                continue
            try:
                out += run_law(law, s)
            except SymbolicSizeError as e:
                out += unsettled(job, f"not settled: {e}", [law.key])
    return out


def _run_keyed(key: tuple) -> list[Proof]:
    arch, spec, case, laws = key
    cases = {c.key: c for c in CASES + (CASE_C,)}
    return run_job(Job(next(a for a in ARCHITECTURES if a.key == arch), next(r for r in RULES if r.key == spec),
                       cases[case], laws))


def run(job_list: Sequence[Job], workers: int = 1, progress: Callable[[str], None] | None = None,
        budget: float | None = None) -> list[Proof]:
    """Run jobs (in ``workers`` processes for the catalogue's own rules); the result
    order is the job order, whatever the timing. With ``budget`` (seconds, one process
    only) a law not started within it is a failed proof "not proved within the time
    budget"."""
    deadline = None if budget is None else time.perf_counter() + budget
    results: list[list[Proof]] = []
    keyed = all(j.spec in RULES and j.arch in ARCHITECTURES for j in job_list)
    if workers > 1 and keyed:
        keys = [(j.arch.key, j.spec.key, j.case.key, j.laws) for j in job_list]
        with ProcessPoolExecutor(workers) as pool:
            for job, proofs in zip(job_list, pool.map(_run_keyed, keys, chunksize=1)):
                results.append(proofs)
                if progress:
                    progress(f"{job.arch.key} {job.spec.key} {job.case.key}")
    else:
        for job in job_list:
            results.append(run_job(job, deadline))
            if progress:
                progress(f"{job.arch.key} {job.spec.key} {job.case.key}")
    return [p for proofs in results for p in proofs]


def prove_rule(rule: Rule | Callable, *, title: str | None = None, inputs: str | None = None,
               signed_weights: bool | None = None, params: tuple | None = None,
               archs: Iterable[Architecture] = ARCHITECTURES[:1], cases: Iterable[SignCase] = CASES,
               laws: Sequence[str] | None = None, budget: float | None = None) -> list[Proof]:
    """Every law for a rule of your own (one :class:`nrm.rules.Rule` on every layer, or a
    callable network -> rules per layer), on ``archs`` (default 2-2-1) and ``cases``.

    Give symbolic parameters as sympy symbols with their sign (``positive=True`` …).
    Left as None, the settings are read off the rule: ``inputs`` is "positive" when the
    rule says ``requires_nonnegative_input``, a sign pattern (positive in case A, mixed in
    case B) when the rule branches on the sign of an input, else "real" ("box" is the
    other choice); ``signed_weights`` (a sign pattern of the weights) is declared when the
    rule branches on the sign of a weight; ``params`` are the symbols of the kernels that
    are not the network's (they are drawn too when a counterexample is searched).

    Never raises for a rule the symbolic layer cannot handle in its budget: a kernel
    beyond the expression size budget (:data:`~nrm_verify.symbolic.ops.MAX_NODES`,
    :data:`~nrm_verify.symbolic.ops.MAX_DEPTH`) and a law not started within ``budget``
    seconds are failed proofs whose note says so ("not settled: …", "not proved within
    the time budget").
    """
    if isinstance(rule, Rule):
        # a first-layer rule (z^B) gets LRP-0 above it; every other rule is used on every layer
        build = (lambda net: [rule] + [Zero()] * (net.depth - 1)) if rule.input_layer_only else \
            (lambda net: [rule] * net.depth)
    else:
        build = rule
    name = title or repr(rule)
    archs = list(archs)
    if inputs is None and isinstance(rule, ZBox):
        inputs = _box_inputs(rule)
    if inputs is None and isinstance(rule, Rule) and rule.requires_nonnegative_input:
        inputs = "positive"
    inputs_b = None
    if signed_weights is None or params is None or inputs is None:
        probe = RuleSpec(name, name, build, inputs=inputs or "real", signed_weights=False)
        net = archs[0].build(probe, CASES[0])
        try:
            m = SymbolicMeasure(net, build(net))
        except SymbolicSizeError as e:
            wanted = tuple(laws or [law.key for law in catalogue.symbolic_laws()])
            return [p for a in archs for c in cases for p in unsettled(Job(a, probe, c, wanted), f"not settled: {e}")]
        branched = {x for _, op, x in m.undecided if op in ("pos", "neg", "sign")}
        weights = {w for layer in net.layers for w in layer.weight.flat if isinstance(w, sp.Symbol)}
        if signed_weights is None:
            signed_weights = bool(branched & weights)
        if inputs is None and branched & set(net.inputs):
            inputs, inputs_b = "positive", "mixed"  # a sign pattern of the inputs too
        if params is None:
            params = tuple(sorted(m.parameters(), key=str))
    if inputs is None:
        inputs = "real"
    spec = RuleSpec(name, name, build, inputs=inputs, signed_weights=signed_weights, params=tuple(params),
                    inputs_b=inputs_b)
    return run(jobs(archs, [spec], cases, laws), budget=budget)


def _box_inputs(rule: ZBox):
    """The box of a z^B rule as an input domain: its numbers, or symbolic bounds."""
    bounds = (rule.low, rule.high)
    if all(isinstance(b, (int, float)) or (isinstance(b, sp.Basic) and b.is_number) for b in bounds):
        return ("box", sp.nsimplify(rule.low), sp.nsimplify(rule.high))
    return "box"


def stale(text: str, path: Path) -> str:
    """"" when ``path`` holds exactly ``text``; otherwise the first lines that differ."""
    import difflib

    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if current == text:
        return ""
    lines = list(difflib.unified_diff(current.splitlines(), text.splitlines(), str(path), "regenerated", lineterm="",
                                      n=0))
    return "\n".join(lines[:20]) or "(the files differ)"


# -- one law, for the files of proofs/ ---------------------------------------------------------------
def law_main(key: str, argv: Sequence[str] | None = None) -> int:
    """Run one law on every architecture, rule and case (or a selection) and print each
    proof — with ``--show``, every step and every counterexample. Exit status 1 when a
    proof is not as expected."""

    law = next(law for law in catalogue.symbolic_laws() if law.key == key)
    parser = argparse.ArgumentParser(description=f"{law.key} — {law.title}")
    parser.add_argument("--arch", action="append", help="2-2-1, 2-2-2-1, 3-2-2 or conv (default: all)")
    parser.add_argument("--rule", action="append", help="rule keys: " + ", ".join(r.key for r in RULES))
    parser.add_argument("--show", action="store_true", help="print every step and counterexample")
    args = parser.parse_args(argv)
    archs = [a for a in ARCHITECTURES if not args.arch or a.key in args.arch]
    specs = [r for r in RULES if not args.rule or r.key in args.rule]
    print(f"{law.key} — {law.title}: {law.statement}")
    print((law.symbolic_function().__doc__ or "").strip())
    print()
    bad = 0
    for p in run(jobs(archs, specs, CASES, [key]), workers=1):
        good = "" if p.good else "   <-- NOT AS EXPECTED"
        print(f"{p.rule} | {p.arch} | case {p.case} | {p.status} (expected: {p.expect}) | {len(p.steps)} steps"
              + (f" | {p.note}" if p.note else "") + good)
        bad += not p.good
        for step in p.steps if args.show else [st for st in p.steps if st.status != PROVED]:
            print(f"    {step.status}: {step.claim}")
            if step.point is not None:
                print(f"        at {point_text(step.point)}: left {step.lhs_value}, right {step.rhs_value}")
            if step.residual:
                print(f"        residual: {step.residual}")
    return 1 if bad else 0


# -- the command ---------------------------------------------------------------------------------
def select(laws: Sequence[str] | None, rules: Sequence[str] | None,
           archs: Sequence[str] | None) -> tuple[list[str] | None, list[str] | None, list[str] | None]:
    """The keys of a selection as the catalogue spells them (laws and rules ignore case);
    an unknown key raises ValueError naming the valid ones — a typo must not select
    nothing and pass."""
    def pick(values, known, what, fold):
        if not values:
            return None
        table = {fold(k): k for k in known}
        unknown = [v for v in values if fold(v.strip()) not in table]
        if unknown:
            raise ValueError(f"unknown {what} {', '.join(map(repr, unknown))}; the {what}s with symbolic proofs "
                             f"are {', '.join(known)}")
        return list(dict.fromkeys(table[fold(v.strip())] for v in values))

    return (pick(laws, [law.key for law in catalogue.symbolic_laws()], "law", str.upper),
            pick(rules, [r.key for r in RULES], "rule", str.lower),
            pick(archs, [a.key for a in ARCHITECTURES], "architecture", str))


def main(argv: Sequence[str] | None = None) -> int:

    parser = argparse.ArgumentParser(prog="python -m nrm_verify.symbolic.prove", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a proof fails or the report is stale")
    parser.add_argument("--output", type=Path, default=REPORT, help="the report to write or check")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--law", action="append", help="run only these laws (e.g. L9); prints, writes nothing")
    parser.add_argument("--rule", action="append", help="only these rule keys (zero, epsilon, gamma, …)")
    parser.add_argument("--arch", action="append", help="only these architectures (2-2-1, 2-2-2-1, 3-2-2, conv)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        args.law, args.rule, args.arch = select(args.law, args.rule, args.arch)
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"{parser.prog}: error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    selection = bool(args.law or args.rule or args.arch)
    archs = [a for a in ARCHITECTURES if not args.arch or a.key in args.arch]
    specs = [r for r in RULES if not args.rule or r.key in args.rule]
    start = time.perf_counter()
    say = (lambda msg: None) if args.quiet else (lambda msg: print(f"  done {msg}", file=sys.stderr, flush=True))
    proofs = run(jobs(archs, specs, CASES, args.law), workers=args.workers, progress=say)
    attention = None if selection else attention_proofs()
    elapsed = time.perf_counter() - start
    bad = [p for p in proofs + (attention or []) if not p.good]
    counts = {}
    for p in proofs:
        counts[p.status] = counts.get(p.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    if attention:
        summary += f"; attention block: {len(attention)} proofs"
    steps = sum(len(p.steps) for p in proofs)
    print(f"{len(proofs)} proofs ({summary}), {steps} steps, {elapsed:.1f} s wall", file=sys.stderr)
    for p in bad:
        print(f"NOT AS EXPECTED: {p.law} {p.rule} {p.arch} case {p.case}: {p.status} (expected {p.expect})",
              file=sys.stderr)
        for s in p.steps:
            if s.status != "proved":
                print(f"    {s.status}: {s.claim}  residual: {s.residual}", file=sys.stderr)
    if selection:
        for p in proofs:
            print(f"{p.law} | {p.rule} | {p.arch} | {p.case} | {p.status} | {len(p.steps)} steps")
        return 1 if bad else 0
    text = render(proofs, attention)
    if args.check:
        diff = stale(text, args.output)
        if diff:
            print(f"{args.output} is stale: re-run `python -m nrm_verify.symbolic.prove` and commit it\n{diff}",
                  file=sys.stderr)
            return 1
        return 1 if bad else 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["run", "jobs", "run_job", "unsettled", "run_law", "prove_rule", "subject", "main", "law_main", "stale",
           "CASE_C", "select"]
