"""The Annex E profile as data: rules per attribute (case table), options, validation of keywords and rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.datadict import tag_for_keyword

from protocols.errors import ConfigError
from site_node.deid.overlay import DeviceFacts, plan_masks
from site_node.deid.profile import Action, load_profile

# (keyword, action after compound codes are resolved and the enabled options are applied)
RULES = [
    ("PatientName", Action.ZERO),
    ("PatientID", Action.DUMMY),  # Z/D -> keyed pseudonym
    ("PatientBirthDate", Action.ZERO),  # excluded from the date option
    ("PatientAddress", Action.REMOVE),
    ("OtherPatientIDs", Action.REMOVE),
    ("InstitutionName", Action.ZERO),  # X/Z/D
    ("InstitutionAddress", Action.REMOVE),
    ("DeviceSerialNumber", Action.ZERO),
    ("StationName", Action.ZERO),
    ("ReferringPhysicianName", Action.ZERO),
    ("OperatorsName", Action.ZERO),
    ("AccessionNumber", Action.ZERO),
    ("StudyInstanceUID", Action.UID),
    ("SOPInstanceUID", Action.UID),
    ("FrameOfReferenceUID", Action.UID),
    ("MediaStorageSOPInstanceUID", Action.UID),
    ("ReferencedImageSequence", Action.UID_IN_SEQUENCE),
    ("StudyDate", Action.CLEAN),  # Z, shifted under Retain Longitudinal ... Modified Dates
    ("ContentDate", Action.CLEAN),
    ("AcquisitionDateTime", Action.CLEAN),
    ("StudyTime", Action.CLEAN),
    ("StudyDescription", Action.CLEAN),  # X, kept clean under Clean Descriptors
    ("SeriesDescription", Action.CLEAN),
    ("ProtocolName", Action.CLEAN),
    ("AdditionalPatientHistory", Action.REMOVE),
    ("ContentSequence", Action.DUMMY),
    ("RequestAttributesSequence", Action.REMOVE),
    ("VerifyingObserverName", Action.DUMMY),
]


@pytest.mark.parametrize(("keyword", "action"), RULES)
def test_basic_profile_rule(keyword: str, action: Action) -> None:
    assert load_profile("basic").actions[tag_for_keyword(keyword)] is action


def test_unlisted_attributes_are_not_in_the_table() -> None:
    actions = load_profile("basic").actions
    assert tag_for_keyword("Manufacturer") not in actions and tag_for_keyword("Modality") not in actions
    assert len(actions) > 600


def test_method_codes_list_basic_profile_and_options() -> None:
    codes = [c for c, _ in load_profile().method_codes]
    assert codes == ["113100", "113107", "113105", "113101"]


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "extends: basic\nattributes: {PatientNmae: X}\n",
            "'PatientNmae' is not a DICOM keyword in pydicom's data dictionary; did you mean 'PatientName'?",
        ),
        ("extends: basic\nattributes: {PatientName: Q}\n", "unknown action 'Q'"),
        ("extends: basic\nenabled: [retain_everything]\n", "enabled options ['retain_everything'] are not defined"),
        (
            "extends: basic\nrecorders: [{name: r, match: {model: X}, regions: [[0.5, 0, 0.2, 1]]}]\n",
            "must satisfy 0 <= x0 < x1 <= 1",
        ),
        ("extends: basic\nrecorders: [{name: r, match: {colour: red}}]\n", "unknown match keys ['colour']"),
        ("extends: basic\nvideo: {crf: 80}\n", "video.crf must be in 0..51"),
        ("extends: basic\nuid_root: 1.2.x.\n", "uid_root"),
        ("extends: basic\nfavourite: 1\n", "unknown keys ['favourite']"),
    ],
)
def test_invalid_site_profiles_fail_loudly_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert message in str(err.value) and "site.yaml" in str(err.value)


def test_site_profile_adds_recorders_and_overrides_settings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "extends: basic\nvideo: {crf: 20}\nrecorders:\n  - name: tower\n"
        "    match: {manufacturer: 'acme.*', width: 100, height: 50}\n    regions: [[0, 0, 0.5, 0.1]]\n",
    )
    profile = load_profile(path)
    assert (
        profile.video.crf == 20
        and profile.video.preset == "veryfast"
        and [r.name for r in profile.recorders] == ["tower"]
    )
    plan = plan_masks(profile.recorders, DeviceFacts(width=100, height=50, manufacturer="ACME Medical"))
    assert plan.boxes == ((0, 0, 50, 5),)
    assert not plan_masks(profile.recorders, DeviceFacts(width=100, height=50, manufacturer="Other"))
