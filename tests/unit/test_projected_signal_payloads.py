"""What the projector announces after a commit: per organization, the payment ids it wrote."""

import json

import services.query.adapters.projected_signal as signal


def test_one_message_per_organization_with_its_payment_ids() -> None:
    messages = signal.announcements("p", [("org-b", "x"), ("org-a", "y"), ("org-a", "x"), ("org-a", "y")])
    assert [(c, json.loads(d)) for c, d in messages] == [("p:projected:org-a", ["x", "y"]),
                                                          ("p:projected:org-b", ["x"])]
    assert signal.announcements("p", []) == []


def test_a_huge_batch_wakes_every_wait_of_its_organization(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(signal, "MAX_IDS", 2)
    [(_, payload)] = signal.announcements("p", [("org-a", str(i)) for i in range(3)])
    assert json.loads(payload) == "*"
