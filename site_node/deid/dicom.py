"""DICOM de-identification: the Annex E profile applied at every depth, keyed UIDs/IDs/dates, pixels handled."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from protocols.errors import DeidError
from site_node.deid.dicom_pixels import PixelJob, process_pixels
from site_node.deid.keys import (
    UidMapper,
    date_shift_days,
    pseudonym,
    shift_da,
    shift_dt,
)
from site_node.deid.outofbody import OutOfBodyDetector
from site_node.deid.overlay import DeviceFacts, MaskPlan, plan_masks
from site_node.deid.phi_scan import clean_text, known_tokens, redact_known
from site_node.deid.profile import Action, DeidProfile

_TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC"}
_IDENTIFYING = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "InstitutionName", "InstitutionAddress",
    "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber", "PatientAddress", "StudyID",
    "MedicalRecordLocator", "PatientTelephoneNumbers", "AdmissionID", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "PlateID", "CassetteID", "PatientBirthDate",
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest", "RegionOfResidence",
)  # fmt: skip


@dataclass
class DicomJob:
    """Everything one DICOM file needs besides its own content."""

    key: bytes
    profile: DeidProfile
    uids: UidMapper
    detector: OutOfBodyDetector
    workdir: Path
    progress: Callable[[int], None] | None = None


@dataclass
class _State:
    profile: DeidProfile
    uids: UidMapper
    known: tuple[str, ...]
    patient_pseudonym: str
    shift: int
    counts: Counter[str] = field(default_factory=Counter)


def read_dicom(src: Path) -> Dataset:
    """Read a DICOM file and fail on truncation (pydicom itself silently shortens a cut-off last value)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(src, force=True)
            for tag in list(ds.keys()):
                raw = ds.get_item(tag)
                if (
                    isinstance(raw, RawDataElement)
                    and raw.length != 0xFFFFFFFF
                    and raw.value is not None
                    and len(raw.value) < raw.length
                ):
                    raise DeidError(f"truncated DICOM file: element {tag} is cut short")
            ds.decode()  # converts every element (and sequence), so damaged items fail here, not later
    except DeidError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on damaged input; all mean quarantine
        raise DeidError(f"unreadable or truncated DICOM file ({type(exc).__name__})") from exc
    if len(ds) == 0:
        raise DeidError("the file holds no DICOM data elements")
    return ds


def _identifiers(ds: Dataset) -> tuple[str, ...]:
    values: list[str] = []

    def collect(_: Dataset, elem: DataElement) -> None:
        if elem.VR == "PN" and elem.value:
            values.extend(str(v) for v in (elem.value if isinstance(elem.value, MultiValue) else [elem.value]))
        elif elem.keyword in _IDENTIFYING and elem.value:
            items = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
            values.extend(str(v) for v in items)

    ds.walk(collect)
    birth = str(ds.get("PatientBirthDate", "") or "")
    if len(birth) == 8 and birth.isdigit():
        y, m, d = birth[:4], birth[4:6], birth[6:]
        values += [f"{y}-{m}-{d}", f"{d}.{m}.{y}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"]
    return known_tokens(values)


def _patient_key(ds: Dataset) -> str:
    """What identifies the patient across studies: the ID (with issuer), else name and birth date."""
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        return f"id:{ds.get('IssuerOfPatientID', '') or ''}:{pid}"
    name, birth = str(ds.get("PatientName", "") or "").strip(), str(ds.get("PatientBirthDate", "") or "")
    if name:
        return f"name:{name}:{birth}"
    return f"study:{ds.get('StudyInstanceUID', '') or ds.get('SOPInstanceUID', '') or 'unknown'}"


def _values(elem: DataElement) -> list:
    v = elem.value
    return list(v) if isinstance(v, MultiValue | list) else [v]


def _set(elem: DataElement, values: list) -> None:
    elem.value = values[0] if len(values) == 1 else values


def _is_registered(uid: str) -> bool:
    u = UID(uid)
    return u.name != str(u)


def _remap(elem: DataElement, st: _State) -> None:
    new = [v if (not v or _is_registered(str(v))) else st.uids(str(v)) for v in _values(elem)]
    st.counts["uids_remapped"] += sum(1 for a, b in zip(_values(elem), new, strict=True) if a != b)
    _set(elem, new)


def _shift(elem: DataElement, st: _State) -> None:
    fn = shift_da if elem.VR == "DA" else shift_dt
    _set(elem, [fn(str(v), st.shift) if v else v for v in _values(elem)])
    st.counts["dates_shifted"] += 1


def _empty(elem: DataElement) -> None:
    elem.value = Sequence([]) if elem.VR == "SQ" else None


def _dummy(elem: DataElement, st: _State) -> None:
    if int(elem.tag) in st.profile.pseudonym_tags:
        elem.value = st.patient_pseudonym
    elif elem.VR == "UI":
        _remap(elem, st)
    elif elem.VR in ("DA", "DT") and st.profile.enabled("retain_longitudinal_modified_dates"):
        _shift(elem, st)
    elif elem.VR in st.profile.dummies:
        elem.value = st.profile.dummies[elem.VR]
    elif elem.VR in ("US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "UV", "SV"):
        elem.value = 0
    else:
        _empty(elem)


def _clean(elem: DataElement, st: _State) -> None:
    if elem.VR in ("DA", "DT"):
        _shift(elem, st)
    elif elem.VR == "PN":
        _empty(elem)
    elif elem.VR in _TEXT_VRS:
        out = []
        for v in _values(elem):
            cleaned, n = clean_text(str(v), st.known) if v else ("", 0)
            out.append(cleaned)
            if n:
                st.counts["descriptors_cleaned"] += 1
        _set(elem, out)


def _apply(ds: Dataset, st: _State) -> None:
    """Apply the profile to one dataset level, then recurse into every remaining sequence."""
    for tag in list(ds.keys()):
        elem = ds[tag]
        if tag.is_private:
            del ds[tag]
            st.counts["private_removed"] += 1
            continue
        if tag.group & 0xFF00 in (0x5000, 0x6000) and tag.group % 2 == 0:
            del ds[tag]
            st.counts["overlays_removed" if tag.group & 0xFF00 == 0x6000 else "curves_removed"] += 1
            continue
        action = st.profile.actions.get(int(tag))
        if action is None:
            _fallback(ds, elem, st)
        elif action is Action.REMOVE:
            del ds[tag]
            st.counts["removed"] += 1
        elif action is Action.ZERO:
            st.counts["emptied"] += int(elem.VR == "PN" or bool(elem.value))
            _empty(elem)
        elif action is Action.DUMMY:
            st.counts["replaced"] += 1
            _dummy(elem, st)
        elif action is Action.UID or (action is Action.UID_IN_SEQUENCE and elem.VR == "UI"):
            _remap(elem, st)
        elif action is Action.CLEAN:
            _clean(elem, st)
        elif action is Action.UID_IN_SEQUENCE and elem.VR != "SQ":
            _empty(elem)
        if tag in ds and ds[tag].VR == "SQ":
            for item in ds[tag].value or []:
                _apply(item, st)


def _fallback(ds: Dataset, elem: DataElement, st: _State) -> None:
    """Attributes the table does not list: names, UIDs, dates, AE titles and unknown values still go."""
    if elem.VR == "PN":
        st.counts["names_removed"] += int(bool(elem.value))
        _empty(elem)
    elif elem.VR == "UI":
        _remap(elem, st)
    elif elem.VR in ("DA", "DT"):
        if st.profile.enabled("retain_longitudinal_modified_dates"):
            _shift(elem, st)
        else:
            _empty(elem)
    elif elem.VR == "AE":
        _empty(elem)
    elif elem.VR == "UN":
        del ds[elem.tag]
        st.counts["unknown_removed"] += 1
    elif elem.VR in _TEXT_VRS and elem.value:
        out = []
        for v in _values(elem):
            text, n = redact_known(str(v), st.known) if v else ("", 0)
            out.append(text)
            if n:
                st.counts["identifiers_scrubbed"] += n
        _set(elem, out)


def _facts(ds: Dataset) -> DeviceFacts:
    return DeviceFacts(
        width=int(ds.get("Columns", 0) or 0),
        height=int(ds.get("Rows", 0) or 0),
        manufacturer=str(ds.get("Manufacturer", "") or ""),
        model=str(ds.get("ManufacturerModelName", "") or ""),
    )


def _mark(ds: Dataset, profile: DeidProfile, masked: bool) -> None:
    """Record what was done, in the attributes PS3.15 E.1.1 asks for."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"surgfed {profile.name} profile"[:64]
    items = []
    for code, meaning in profile.method_codes:
        if code == "113101" and not masked:
            continue  # Clean Pixel Data is claimed only where pixels were actually cleaned
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "DCM", meaning[:64]
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    longitudinal = profile.enabled("retain_longitudinal_modified_dates")
    ds.LongitudinalTemporalInformationModified = "MODIFIED" if longitudinal else "REMOVED"
    if masked:
        ds.BurnedInAnnotation = "NO"


def _file_meta(ds: Dataset, transfer_syntax: UID) -> None:
    meta = FileMetaDataset()
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SURGFED_DEID"
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128  # a preamble can hold a TIFF header or anything else: never keep it


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    return ImplicitVRLittleEndian if ds.original_encoding[0] else ExplicitVRLittleEndian


def deidentify_dicom(src: Path, dst: Path, job: DicomJob) -> dict[str, int]:
    """De-identify one DICOM file into `dst`; raises DeidError where it cannot be done safely."""
    ds = read_dicom(src)
    if str(ds.get("RecognizableVisualFeatures", "")).upper() == "YES":
        raise DeidError("RecognizableVisualFeatures is YES: faces or other recognisable features cannot be cleaned")
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    burned = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
    plan = plan_masks(job.profile.recorders, _facts(ds), burned_in_flag=burned) if has_pixels else MaskPlan()
    patient = _patient_key(ds)
    st = _State(
        profile=job.profile,
        uids=job.uids,
        known=_identifiers(ds),
        patient_pseudonym=pseudonym(job.key, "patient", patient, prefix="P"),
        shift=date_shift_days(job.key, patient, *job.profile.date_shift),
    )
    transfer_syntax = _transfer_syntax(ds)
    pixel_job = PixelJob(job.profile, job.detector, plan, job.workdir, job.progress)
    transfer_syntax, masked = (
        process_pixels(ds, transfer_syntax, pixel_job, st.counts) if has_pixels else (transfer_syntax, False)
    )
    _apply(ds, st)
    _mark(ds, job.profile, masked)
    _file_meta(ds, transfer_syntax)
    ds.save_as(dst, enforce_file_format="SOPClassUID" in ds and "SOPInstanceUID" in ds)
    _verify(dst)
    return dict(st.counts)


def _verify(path: Path) -> None:
    """Re-read the output: it must parse, say it is de-identified, and hold no private or name values."""
    try:
        out = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001
        raise DeidError(f"the written DICOM file cannot be re-read ({type(exc).__name__})") from exc
    if out.get("PatientIdentityRemoved") != "YES":
        raise DeidError("the written DICOM file lacks PatientIdentityRemoved = YES")
    leftovers: list[str] = []

    def check(_: Dataset, elem: DataElement) -> None:
        if elem.tag.is_private or (elem.VR == "PN" and elem.value):
            leftovers.append(str(elem.tag))

    out.walk(check)
    if leftovers:
        raise DeidError(f"the written DICOM file still holds private or person-name elements {leftovers[:5]}")
