"""Contract tests: today's models still accept every payload any older version produced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentmesh.shared.events.contracts import CATALOG, UserRegistered
from agentmesh.shared.events.envelope import Envelope

SAMPLES = Path(__file__).parent / "contracts" / "samples"
ALL_SAMPLES = sorted(SAMPLES.glob("*/v*.json"))


def version_of(path: Path) -> int:
    return int(path.stem.removeprefix("v"))


@pytest.mark.parametrize("sample", ALL_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_current_model_accepts_stored_sample(sample: Path):
    model = CATALOG[sample.parent.name]
    assert version_of(sample) <= model.version
    payload = model.model_validate(json.loads(sample.read_text()))
    envelope = Envelope.wrap(payload, source=sample.parent.name.split(".")[0])
    assert envelope.subject_id == payload.subject_id
    assert Envelope.model_validate_json(envelope.model_dump_json()).data == envelope.data


@pytest.mark.parametrize("subject", sorted(CATALOG))
def test_every_contract_version_has_a_sample(subject: str):
    model = CATALOG[subject]
    for version in range(1, model.version + 1):
        assert (SAMPLES / subject / f"v{version}.json").exists(), (
            f"add a sample payload for {subject} v{version}"
        )


def test_a_breaking_change_is_caught():
    """The check above can fail: a new required field rejects the stored v1 payload."""

    class UserRegisteredBroken(UserRegistered):
        locale: str

    sample = json.loads((SAMPLES / UserRegistered.subject / "v1.json").read_text())
    with pytest.raises(ValidationError):
        UserRegisteredBroken.model_validate(sample)


def test_unknown_fields_from_newer_producers_are_ignored():
    sample = json.loads((SAMPLES / UserRegistered.subject / "v1.json").read_text())
    sample["added_in_a_later_minor"] = True
    assert UserRegistered.model_validate(sample).email == sample["email"]


def test_subjects_follow_the_naming_rule():
    for subject, model in CATALOG.items():
        service, *_rest = subject.split(".")
        assert service in {"identity", "agents", "chat"}
        assert len(subject.split(".")) >= 3
        assert model.subject == subject
