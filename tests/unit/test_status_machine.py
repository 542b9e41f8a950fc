import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.payment import (
    ACTION_TARGET,
    TRANSITIONS,
    PaymentAction,
    PaymentStatus,
    allowed_actions,
    can_transition,
    is_allowed,
    rejection_reason,
)

S = PaymentStatus
C = PaymentAction

# The table of DESIGN section 3, written out independently of the code under test.
LEGAL = {
    (S.PROCESSING, S.COMPLETED), (S.PROCESSING, S.FAILED), (S.PROCESSING, S.CANCELLED),
    (S.COMPLETED, S.REFUNDED),
    (S.PROCESSING, S.EXPIRED),  # the system's act when the deadline passes, no command's
    (S.COMPLETED, S.REFUNDED), (S.COMPLETED, S.PARTIALLY_REFUNDED),
    (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED), (S.PARTIALLY_REFUNDED, S.REFUNDED),
}


@pytest.mark.parametrize("current", list(S))
@pytest.mark.parametrize("target", list(S))
def test_transition_table_is_exactly_the_design(current: S, target: S) -> None:
    assert can_transition(current, target) == ((current, target) in LEGAL)


def test_terminal_states_have_no_way_out() -> None:
    for status in (S.FAILED, S.CANCELLED, S.REFUNDED, S.EXPIRED):
        assert TRANSITIONS[status] == frozenset()


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (S.PROCESSING, {C.UPDATE, C.COMPLETE, C.FAIL, C.CANCEL, C.DELETE}),
        (S.COMPLETED, {C.REFUND}),
        (S.FAILED, {C.DELETE}),
        (S.CANCELLED, {C.DELETE}),
        (S.REFUNDED, set()),
        (S.EXPIRED, {C.DELETE}),
        (S.PARTIALLY_REFUNDED, {C.REFUND}),
    ],
)
def test_allowed_commands_per_status(status: S, expected: set[C]) -> None:
    assert set(allowed_actions(status)) == expected


@given(st.lists(st.sampled_from(list(C)), max_size=12))
def test_any_command_sequence_stays_inside_the_table(commands: list[C]) -> None:
    status = S.PROCESSING
    for command in commands:
        if not is_allowed(command, status):
            assert rejection_reason(command, status)
            continue
        if command in ACTION_TARGET:
            new = ACTION_TARGET[command]
            assert (status, new) in LEGAL
            status = new
        elif command is C.DELETE:
            assert status not in (S.COMPLETED, S.REFUNDED, S.PARTIALLY_REFUNDED)
            break
        else:
            assert status is S.PROCESSING


def test_rejection_reason_names_the_status() -> None:
    assert "refunded" in rejection_reason(C.COMPLETE, S.REFUNDED)
    assert "processing" in rejection_reason(C.UPDATE, S.COMPLETED) or "completed" in rejection_reason(
        C.UPDATE, S.COMPLETED
    )
