"""DICOM de-identification on pydicom's bundled files and on variants made here; every output re-read."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from deid_fixtures import (
    PYDICOM_FILES,
    copy_pydicom,
    dicom_variant,
    find_needles,
    in_body,
    out_of_body,
    pydicom_file,
)
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import UID, JPEGBaseline8Bit, generate_uid

from site_node.deid.keys import UidMapper, pseudonym
from site_node.deid.profile import load_profile
from site_node.deid.runner import deidentify_paths

# Identifiers each bundled file carries, as written in it.
NEEDLES = {
    "examples_overlay.dcm": [
        "Sssssss",
        "Jsssss",
        "021234567",
        "AKH - WIEN",
        "Waehringer",
        "Weißenkirchen",
        "MRC25641",
        "8000000000330109",
        "meduser",
        "20051130",
    ],
    "waveform_ecg.dcm": ["642341", "Ospedali Galliera", "03028041970546", "13002689", "20130125", "19710123"],
    "CT_small.dcm": ["CompressedSamples", "1CT1", "JFK IMAGING", "CT01_OC0", "20040119", "19970430"],
    "MR_small.dcm": ["CompressedSamples", "4MR1", "20040826", "-0000200"],
    "test-SR.dcm": ["Riesmeier", "Jörg", "Observer^Verifying", "OFFIS e.V.", "20010213", "20001206"],
    "rtstruct.dcm": ["Phantom30sep", "dmason", "station1", "19691231", "20091223"],
    "priv_SQ.dcm": ["aaabbbccc"],
    "nested_priv_SQ.dcm": ["Double Nested SQ"],
    "chrJapMulti.dcm": ["やまだ", "たろう", "2008-4", "2008050417172310", "ID0VAZ", "20080504"],
    "chrRuss.dcm": ["Люкceмбypг", "SCSRUSS", "20070405"],
    "chrArab.dcm": ["قباني", "لنزار", "SCSARAB"],
}
ENCODINGS = ("latin-1", "iso-8859-5", "iso-8859-6", "iso2022_jp", "euc_jp", "shift_jis")
SECOND_STUDY_DATE = "20040301"  # 42 days after CT_small's StudyDate 20040119


def _uids(ds: Dataset) -> set[str]:
    found: set[str] = set()
    ds.walk(
        lambda _, e: found.update(str(v) for v in (e.value if e.VM > 1 else [e.value]) if v) if e.VR == "UI" else None
    )
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        found.update(str(meta[t].value) for t in meta.keys() if meta[t].VR == "UI" and meta[t].value)
    return {u for u in found if UID(u).name == u}  # unregistered: instance, study, series, frame of reference...


@pytest.fixture(scope="module")
def dicom_run(tmp_path_factory: pytest.TempPathFactory, key: bytes) -> dict:
    src = tmp_path_factory.mktemp("dicom-in")
    for name in PYDICOM_FILES:
        copy_pydicom(name, src)
    ct = src / "CT_small.dcm"
    dicom_variant(
        ct,
        src / "ct_second_study.dcm",
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        SOPInstanceUID=generate_uid(),
        StudyDate=SECOND_STUDY_DATE,
    )
    (src / "ct_truncated.dcm").write_bytes(ct.read_bytes()[:20000])
    dicom_variant(ct, src / "ct_burned.dcm", BurnedInAnnotation="YES", SOPInstanceUID=generate_uid())
    out = tmp_path_factory.mktemp("dicom-out")
    report = deidentify_paths([src], out, key, progress=False)
    entries = {e.pseudo_id: e for e in report.entries}
    return {
        "src": src,
        "out": out,
        "report": report,
        "entry": lambda p: entries[pseudonym(key, "input", str(p.resolve()))],
    }


def _output(run: dict, name: str) -> tuple[Dataset, Dataset]:
    path = run["src"] / Path(name).name
    entry = run["entry"](path)
    assert entry.status == "ok", entry.reason
    return pydicom.dcmread(path, force=True), pydicom.dcmread(run["out"] / entry.output)


@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_identifiers_gone_and_output_valid(dicom_run: dict, key: bytes, name: str) -> None:
    original, out = _output(dicom_run, name)
    base = Path(name).name
    root = load_profile().uid_root
    needles = NEEDLES[base] + sorted(
        u for u in _uids(original) if not root.startswith(u)
    )  # our own root is no identifier
    assert find_needles(dicom_run["out"], needles, ENCODINGS) == []
    assert out.PatientIdentityRemoved == "YES"
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert {"113100", "113107", "113105"} <= codes and "113101" not in codes
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    seen: list[str] = []
    out.walk(
        lambda _, e: seen.append(str(e.tag)) if e.tag.is_private or e.tag.group & 0xFF00 in (0x5000, 0x6000) else None
    )
    out.walk(lambda _, e: seen.append(f"PN {e.tag}") if e.VR == "PN" and e.value else None)
    assert seen == []
    mapper = UidMapper(key, load_profile().uid_root)
    assert _uids(out) - {"1.2.826.0.1.3680043.8.498.1"} <= {mapper(u) for u in _uids(original)} | {
        str(pydicom.uid.PYDICOM_IMPLEMENTATION_UID)
    }


def test_same_patient_two_studies_keeps_id_interval_and_frame_of_reference(dicom_run: dict) -> None:
    _, first = _output(dicom_run, "CT_small.dcm")
    _, second = _output(dicom_run, "ct_second_study.dcm")
    assert first.PatientID == second.PatientID and first.PatientID.startswith("P") and len(first.PatientID) == 17
    d1, d2 = (date(int(d[:4]), int(d[4:6]), int(d[6:])) for d in (first.StudyDate, second.StudyDate))
    assert (d2 - d1).days == 42 and first.StudyDate != "20040119"
    assert first.StudyInstanceUID != second.StudyInstanceUID
    assert first.FrameOfReferenceUID == second.FrameOfReferenceUID  # shared in the originals: shared after remapping
    assert first.StudyTime == pydicom.dcmread(pydicom_file("CT_small.dcm")).StudyTime  # whole-day shifts keep times


def test_references_inside_sequences_are_remapped_consistently(dicom_run: dict, key: bytes) -> None:
    original, out = _output(dicom_run, "rtstruct.dcm")
    mapper = UidMapper(key, load_profile().uid_root)
    ref_in = original.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert out.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == mapper(ref_in)
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID == mapper(original.SOPInstanceUID)


def test_rerun_with_same_key_is_identical_and_other_key_differs(dicom_run: dict, key: bytes, tmp_path: Path) -> None:
    src = dicom_run["src"] / "CT_small.dcm"
    _, first = _output(dicom_run, "CT_small.dcm")
    again = deidentify_paths([src], tmp_path / "again", key, progress=False).entries[0]
    other = deidentify_paths([src], tmp_path / "other", b"k" * 40, progress=False).entries[0]
    a, b = pydicom.dcmread(tmp_path / "again" / again.output), pydicom.dcmread(tmp_path / "other" / other.output)
    assert (a.SOPInstanceUID, a.PatientID, a.StudyDate) == (first.SOPInstanceUID, first.PatientID, first.StudyDate)
    assert b.SOPInstanceUID != first.SOPInstanceUID and b.PatientID != first.PatientID


@pytest.mark.parametrize(
    ("name", "reason"), [("ct_truncated.dcm", "truncated"), ("ct_burned.dcm", "BurnedInAnnotation")]
)
def test_unsafe_files_are_quarantined_not_copied(dicom_run: dict, name: str, reason: str) -> None:
    entry = dicom_run["entry"](dicom_run["src"] / name)
    assert entry.status == "quarantined" and reason in entry.reason and entry.output is None
    assert (dicom_run["out"] / "quarantine" / f"{entry.pseudo_id}.json").is_file()
    assert dicom_run["report"].n_quarantined() == 2


def test_burned_in_annotation_with_mask_rule_is_masked(tmp_path: Path, key: bytes, site_profile: Path) -> None:
    src = dicom_variant(pydicom_file("CT_small.dcm"), tmp_path / "burned.dcm", BurnedInAnnotation="YES")
    entry = deidentify_paths([src], tmp_path / "out", key, str(site_profile), progress=False).entries[0]
    assert entry.status == "ok" and entry.actions["overlay_boxes_masked"] == 1
    out = pydicom.dcmread(tmp_path / "out" / entry.output)
    assert out.BurnedInAnnotation == "NO" and "113101" in {i.CodeValue for i in out.DeidentificationMethodCodeSequence}
    assert (out.pixel_array[:16, :32] == 0).all() and out.pixel_array[16:, 32:].max() > 0


def test_known_overlay_device_without_mask_is_quarantined(tmp_path: Path, key: bytes, site_profile: Path) -> None:
    src = dicom_variant(pydicom_file("CT_small.dcm"), tmp_path / "bad.dcm", ManufacturerModelName="BADREC-1")
    entry = deidentify_paths([src], tmp_path / "out", key, str(site_profile), progress=False).entries[0]
    assert entry.status == "quarantined" and "no mask regions" in entry.reason


def _jpeg_frame(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x013B] = "DOE JOHNATHAN"
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def test_multiframe_jpeg_out_of_body_frames_blanked_and_exif_dropped(tmp_path: Path, key: bytes) -> None:
    frames = [in_body(i) for i in range(4)] + [out_of_body(4)]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.77.1.1", generate_uid()
    ds.PatientName, ds.PatientID, ds.Rows, ds.Columns, ds.NumberOfFrames = "DOE^JOHNATHAN", "JPGPAT-55", 120, 160, 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_FULL_422", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([_jpeg_frame(f) for f in frames])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "endo.dcm", enforce_file_format=True)
    entry = deidentify_paths([tmp_path / "endo.dcm"], tmp_path / "out", key, progress=False).entries[0]
    assert entry.status == "ok" and entry.actions["frames_blanked"] == 2  # frame 4 and its margin frame 3
    out = pydicom.dcmread(tmp_path / "out" / entry.output)
    decoded = [np.asarray(Image.open(io.BytesIO(f))) for f in generate_frames(out.PixelData, number_of_frames=5)]
    assert [float(f.max()) < 40 for f in decoded] == [False, False, False, True, True]
    assert out.LossyImageCompression == "01" and "ISO_10918_1" in out.LossyImageCompressionMethod
    assert find_needles(tmp_path / "out", ["DOE JOHNATHAN", "JOHNATHAN", "JPGPAT-55"]) == []
