"""Every bad input gets its own exception, with a message that says what was wrong.

The cases live in ``bad_inputs.py`` (shared with ``test_untouched.py``). Each asserts the
exception's class and the key words of its message: the module and its path, the event,
the valid layer names, the offending tensor, the shapes.
"""

from __future__ import annotations

import pytest
import torch
from bad_inputs import CASES, BadInput, conv

import nrm
from nrm import errors


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_its_error(case: BadInput):
    model, x = case.build()
    with pytest.raises(case.error) as info:
        case.act(model, x)
    assert type(info.value) is case.error, f"expected exactly {case.error.__name__}, got {type(info.value).__name__}"
    assert isinstance(info.value, nrm.NRMError)
    message = str(info.value)
    missing = [k for k in case.keywords if k.lower() not in message.lower()]
    assert not missing, f"message lacks {missing}: {message!r}"


def test_every_error_class_has_a_case():
    """Every error class is raised by some case (a class that only gathers others, such as
    UnsupportedModuleError above UnsupportedOperationError, through its subclasses)."""
    classes = {cls for cls in vars(errors).values()
               if isinstance(cls, type) and issubclass(cls, nrm.NRMError) and cls is not nrm.NRMError}
    covered = {case.error for case in CASES}
    covered |= {base for cls in covered for base in cls.__mro__ if base in classes}
    assert classes - covered == set(), f"no bad-input case for {sorted(c.__name__ for c in classes - covered)}"


@pytest.mark.parametrize(("error", "builtin"), [
    (nrm.UnsupportedModuleError, TypeError), (nrm.RuleParameterError, ValueError),
    (nrm.RuleAssignmentError, ValueError), (nrm.ZeroOutputError, ValueError),
    (nrm.NullEventError, ZeroDivisionError), (nrm.UnknownLayerError, KeyError), (nrm.EventIndexError, IndexError),
    (nrm.NonFiniteError, ValueError), (nrm.DeviceMismatchError, RuntimeError), (nrm.DtypeMismatchError, TypeError),
    (nrm.TrainingModeError, RuntimeError), (nrm.ShapeError, ValueError), (nrm.RelevanceDependentRuleError, TypeError),
])
def test_errors_are_also_the_builtin_exception_they_refine(error, builtin):
    """Code that catches the usual Python exception (KeyError for a missing name, …) still works."""
    assert issubclass(error, builtin)
    assert issubclass(error, nrm.NRMError)


def test_unknown_layer_message_is_not_quoted():
    """KeyError's str() would wrap the message in quotes; UnknownLayerError prints it as written."""
    model, x = conv()
    m = nrm.explain(model, x, target=0)
    with pytest.raises(nrm.UnknownLayerError) as info:
        m.marginal("classifer.0")
    assert str(info.value).startswith("no layer named 'classifer.0'")


def test_null_event_of_spec_worked_example_is_really_null():
    """The union used by the null-event case has measure exactly 0 (NRM-SPEC §6), while
    each part does not: so the error comes from the measure, not from an empty set."""
    from bad_inputs import NULL_UNION, worked_example

    model, x = worked_example()
    m = nrm.explain(model, x, target=0)
    assert m(NULL_UNION).item() == pytest.approx(0.0, abs=1e-12)
    assert m(nrm.At("input", index=[0])).item() == pytest.approx(-1.0)
    assert m(nrm.At("0", index=[0])).item() == pytest.approx(1.5)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="no CUDA device on this machine")),
]


@pytest.mark.parametrize("device", DEVICES)
def test_results_agree_across_devices(device):
    """The same model and input on every available device give the float64 CPU measure
    within float32 tolerance (NRM-SPEC §4, invariances), and results stay on the device."""
    from nrm_verify.zoo.models import small_cnn

    x64 = torch.linspace(-1.0, 1.0, 2 * 3 * 16 * 16, dtype=torch.float64).reshape(2, 3, 16, 16).sin()
    rules = nrm.presets.EpsilonGammaFlat()
    ref = nrm.explain(small_cnn(seed=3, dtype=torch.float64), x64, target=[1, 4], rules=rules)

    model = small_cnn(seed=3).to(device)
    m = nrm.explain(model, x64.float().to(device), target=[1, 4], rules=rules)
    event = nrm.At("features.3", channels=[2, 5])
    region = torch.zeros(3, 16, 16, dtype=torch.bool)
    region[:, 4:12, 4:12] = True

    pairs = [
        (m.marginal("input"), ref.marginal("input")),
        (m.absorbed("input"), ref.absorbed("input")),
        (m.marginal("input", within=event), ref.marginal("input", within=event)),
        (m.joint("features.0", "features.3"), ref.joint("features.0", "features.3")),
        (m.conditional(nrm.At("input", mask=region), given=event),
         ref.conditional(nrm.At("input", mask=region), given=event)),
    ]
    for got, want in pairs:
        assert got.device.type == torch.device(device).type
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.cpu().double(), want, rtol=1e-4, atol=1e-5)
