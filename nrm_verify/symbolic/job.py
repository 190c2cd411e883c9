"""The symbolic proofs in a child process: started before a numeric search, collected after
it, so that the two run at the same time (``check-rule`` and ``nrm-verify check``).

    job = ProofJob(["epsilon", MyRule()], ["L1", "L7"], timeout=60)   # forks at once
    ...                                                               # search meanwhile
    result = job.collect()          # waits until the timeout at most
    result.outcomes                 # one ProofOutcome per proof (subject, law, arch, case, status, …)
    result.summary(1, "L7")         # (status, note) of one law for one subject

A subject is a key of the symbolic catalogue (:data:`nrm_verify.symbolic.catalog.RULES`:
its parameters are symbols, every architecture) or a rule object (one rule on every
layer, :func:`~nrm_verify.symbolic.prove.prove_rule`: the default architecture, one law at
a time so that a law the timeout cuts off leaves the others' results). A law whose proof
did not finish in time is "not settled" (:mod:`nrm_verify.laws.status`), never an
exception; the child is killed at the timeout.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from nrm.rules import Rule
from nrm_verify.laws.status import NOT_APPLICABLE, NOT_SETTLED, PROVED, REFUTED


@dataclass(frozen=True)
class ProofOutcome:
    """One proof's result, as the child sends it: the subject's position in the job, the
    law, the rule's title, the architecture and case, the status, what the law claims
    (``expect``: "holds", "fails", "either" or "not applicable"), whether that was the
    outcome (``good``), the note, and a refutation's point as text."""

    subject: int
    law: str
    rule: str
    arch: str
    case: str
    status: str
    expect: str
    good: bool
    note: str = ""
    point: str = ""


@dataclass
class ProofResults:
    """What :meth:`ProofJob.collect` gathered: the outcomes, the (subject, law) pairs that
    finished, and a note on what did not (empty when everything finished)."""

    outcomes: list[ProofOutcome] = field(default_factory=list)
    finished: set = field(default_factory=set)
    note: str = ""

    def of(self, subject: int, law: str | None = None) -> list[ProofOutcome]:
        return [o for o in self.outcomes if o.subject == subject and (law is None or o.law == law)]

    def summary(self, subject: int, law: str) -> tuple[str, str]:
        """(status, note) of ``law`` for ``subject``: refuted when a proof found a rational
        counterexample point, proved when every applicable proof is, not applicable when
        none applies, else not settled (with the reason)."""
        mine = self.of(subject, law)
        if (subject, law) not in self.finished and not mine:
            return NOT_SETTLED, "not reached before the symbolic proofs' time ran out"
        live = [o for o in mine if o.status != NOT_APPLICABLE]
        if not live:
            return NOT_APPLICABLE, next((o.note for o in mine if o.note), "")
        refuted = next((o for o in live if o.status == REFUTED), None)
        if refuted is not None:
            return REFUTED, f"{refuted.arch} case {refuted.case}: {refuted.point}"[:400]
        if all(o.status == PROVED for o in live):
            return PROVED, f"on {len(live)} symbolic network case(s)"
        why = next((o.note for o in live if o.status == NOT_SETTLED and o.note.startswith("not ")), "")
        return NOT_SETTLED, (why or "a step did not simplify and no counterexample was found")[:300]


def _outcome(subject: int, proof) -> ProofOutcome:
    step = proof.counterexample()
    point = "" if step is None else f"{step.claim}: left {step.lhs_value}, right {step.rhs_value} at {step.point}"
    return ProofOutcome(subject, proof.law, proof.rule, proof.arch, proof.case, proof.status, proof.expect,
                        proof.good, proof.note, point)


def _prove_all(subjects: Sequence, laws: Sequence[str], budget: float, out) -> None:  # pragma: no cover — a child
    """The child: every law for every subject, each result put on ``out`` as it comes;
    None at the end."""
    import torch

    from nrm_verify.symbolic import catalog, prove

    torch.set_num_threads(1)
    deadline = time.perf_counter() + budget
    try:
        for i, subject in enumerate(subjects):
            if isinstance(subject, str):
                spec = next(r for r in catalog.RULES if r.key == subject)
                jobs = prove.jobs(catalog.ARCHITECTURES, [spec], catalog.CASES, laws)
                for p in prove.run(jobs, budget=max(0.0, deadline - time.perf_counter())):
                    out.put(("proof", _outcome(i, p)))
                for law in laws:
                    out.put(("finished", (i, law)))
                continue
            _prove_rule(i, subject, laws, deadline, out)
    finally:
        out.put(None)


def _prove_rule(i: int, rule: Rule, laws: Sequence[str], deadline: float, out) -> None:  # pragma: no cover
    """One law at a time; a kernel beyond the symbolic layer's size budget, or a rule it
    cannot evaluate, settles every law left the same way at once."""
    from nrm_verify.symbolic import prove

    settled_all = None
    for law in laws:
        if settled_all is not None:
            out.put(("proof", ProofOutcome(i, law, repr(rule), "", "", NOT_SETTLED, "either", False, settled_all)))
            out.put(("finished", (i, law)))
            continue
        try:
            proofs = prove.prove_rule(rule, laws=[law], budget=max(0.0, deadline - time.perf_counter()))
        except Exception as e:  # noqa: BLE001 — the symbolic layer cannot evaluate the rule
            settled_all = f"the symbolic layer could not evaluate the rule: {type(e).__name__}: {e}"[:300]
            out.put(("proof", ProofOutcome(i, law, repr(rule), "", "", NOT_SETTLED, "either", False, settled_all)))
            out.put(("finished", (i, law)))
            continue
        for p in proofs:
            out.put(("proof", _outcome(i, p)))
        out.put(("finished", (i, law)))
        beyond = next((p.note for p in proofs if p.status == NOT_SETTLED and p.note.startswith("not settled")), "")
        if beyond:  # the kernel itself is beyond the size budget: so for every law
            settled_all = beyond[:300]


class ProofJob:
    """The symbolic proofs of ``laws`` for ``subjects`` (catalogue keys or rule objects) in
    a forked child process, for at most ``timeout`` seconds from now."""

    def __init__(self, subjects: Sequence[str | Rule], laws: Sequence[str], timeout: float):
        self.subjects, self.laws, self.timeout = list(subjects), list(laws), float(timeout)
        self.deadline = time.perf_counter() + self.timeout
        self.started = time.perf_counter()
        self.child, self.queue, self.note = None, None, ""
        if not self.subjects or not self.laws:
            self.note = "nothing to prove"
            return
        try:
            from nrm_verify.symbolic import prove  # noqa: F401 — imported here, before the fork
        except Exception as e:  # noqa: BLE001 — sympy missing or broken: the proofs are not run
            self.note = f"symbolic proofs unavailable ({type(e).__name__}: {e})"
            return
        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            self.note = "symbolic proofs skipped: no fork() on this platform"
            return
        self.queue = context.Queue()
        self.child = context.Process(target=_prove_all, args=(self.subjects, self.laws, self.timeout, self.queue),
                                     daemon=True)
        self.child.start()

    @property
    def started_child(self) -> bool:
        return self.child is not None

    def collect(self) -> ProofResults:
        """Wait for the proofs until the deadline; the child is killed then."""
        result = ProofResults(note=self.note)
        if self.child is None:
            return result
        finished = False
        while True:
            left = self.deadline - time.perf_counter()
            try:
                item = self.queue.get(timeout=max(0.05, min(1.0, left)))
            except queue.Empty:
                if left <= 0 or not self.child.is_alive():
                    break
                continue
            if item is None:
                finished = True
                break
            what, value = item
            if what == "proof":
                result.outcomes.append(value)
            else:
                result.finished.add(value)
        if self.child.is_alive():
            self.child.kill()
        self.child.join(1)
        missing = sorted({law for i in range(len(self.subjects)) for law in self.laws
                          if (i, law) not in result.finished})
        if missing:
            result.note = (f"symbolic proofs stopped after {self.timeout:.0f} s; not reached: {', '.join(missing)}"
                           if not finished else f"symbolic proofs gave no result for {', '.join(missing)}")
        return result


__all__ = ["ProofJob", "ProofResults", "ProofOutcome"]
