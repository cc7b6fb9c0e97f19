"""Real test files for the de-identification tests: videos, DICOM, images, label files, all carrying identifiers."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pydicom
from av.bitstream import BitStreamFilterContext
from PIL import Image, ImageDraw
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG4HP41, generate_uid

PATIENT = "DOE^JOHNATHAN"
SEI_UUID = "086f3693-b7b3-4f2c-9653-21492feee5b8"
W, H = 160, 120

PYDICOM_FILES = (
    "examples_overlay.dcm",
    "waveform_ecg.dcm",
    "CT_small.dcm",
    "MR_small.dcm",
    "test-SR.dcm",
    "rtstruct.dcm",
    "priv_SQ.dcm",
    "nested_priv_SQ.dcm",
    "charset_files/chrJapMulti.dcm",
    "charset_files/chrRuss.dcm",
    "charset_files/chrArab.dcm",
)


def pydicom_file(name: str) -> Path:
    if name.startswith("charset_files/"):
        return Path(get_charset_files(name.split("/", 1)[1])[0])
    return Path(get_testdata_file(name))


def write_key(path: Path, seed: int = 7) -> bytes:
    key = np.random.default_rng(seed).integers(0, 256, 48, dtype=np.uint8).tobytes()
    path.write_bytes(key)
    return key


def in_body(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A laparoscopic-looking frame: red/pink textured tissue, dark circular vignette, moving texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tex = np.sin((xx + 3 * i) / 9.0) * np.cos((yy - 2 * i) / 7.0)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 175 + 45 * tex
    img[..., 1] = 55 + 20 * tex
    img[..., 2] = 65 + 15 * tex
    r = np.hypot((xx - w / 2) / (w / 2), (yy - h / 2) / (h / 2))
    img *= np.clip(1.25 - r, 0.0, 1.0)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def out_of_body(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A room scene: green drapes, grey walls, a white light."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (150, 155, 160)
    img[h // 2 :, :] = (60, 130, 110)
    img[5:25, (i * 2) % (w - 30) : (i * 2) % (w - 30) + 30] = 245
    return img


def burn_text(img: np.ndarray, text: str) -> np.ndarray:
    """A recorder's burned-in overlay in the top-left quarter."""
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.rectangle((0, 0, 75, 26), fill=(0, 0, 0))
    draw.text((2, 2), text, fill=(255, 255, 255))
    draw.text((2, 14), "1961-03-04", fill=(255, 255, 255))
    return np.asarray(pil)


def frames_for(n: int, oob: Iterable[tuple[int, int]] = (), overlay: str | None = None) -> list[np.ndarray]:
    spans = list(oob)
    out = []
    for i in range(n):
        img = out_of_body(i) if any(a <= i < b for a, b in spans) else in_body(i)
        out.append(burn_text(img, overlay) if overlay else img)
    return out


def make_video(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    fmt: str | None = None,
    codec: str = "libx264",
    fps: int = 25,
    metadata: dict[str, str] | None = None,
    stream_metadata: dict[str, str] | None = None,
    audio: bool = False,
    sei_text: str | None = None,
    subtitle: str | None = None,
    gop: int | None = None,
) -> Path:
    """Encode frames with whatever extra streams and metadata a recorder might leave behind."""
    out = av.open(str(path), "w", format=fmt)
    out.metadata.update(metadata or {})
    opts = {"g": str(gop)} if gop else {}
    vs = out.add_stream(codec, rate=fps, options=opts)
    vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
    vs.pix_fmt = "yuv420p"
    vs.metadata.update(stream_metadata or {})
    aus = out.add_stream("aac", rate=48000) if audio else None
    subs = out.add_mux_stream("subrip") if subtitle else None
    out.start_encoding()
    bsf = BitStreamFilterContext(f"h264_metadata=sei_user_data={SEI_UUID}+{sei_text}", vs) if sei_text else None
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        _mux(out, vs, vs.encode(frame), bsf)
        if subs is not None and i == 0:
            pkt = av.Packet(subtitle.encode())
            pkt.stream, pkt.pts, pkt.dts, pkt.duration, pkt.time_base = subs, 0, 0, 2000, Fraction(1, 1000)
            out.mux(pkt)
    _mux(out, vs, vs.encode(None), bsf)
    if bsf is not None:
        _mux(out, vs, [], bsf, flush=True)
    if aus is not None:
        for j in range(len(frames) * 48000 // fps // 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, j * 1024
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode(None):
            out.mux(p)
    out.close()
    return path


def _mux(out, stream, packets, bsf, flush: bool = False) -> None:
    if bsf is None:
        for p in packets:
            out.mux(p)
        return
    for p in [*packets, None] if flush else packets:
        for q in bsf.filter(p):
            q.stream = stream
            out.mux(q)


def decode_frames(path: Path) -> tuple[list[np.ndarray], list[float]]:
    """RGB frames and their presentation times in seconds."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames, times = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * f.time_base))
    return frames, times


def is_blank(img: np.ndarray) -> bool:
    return float(img.max()) < 40


def video_dicom(
    path: Path, stream: bytes, *, patient: str = PATIENT, patient_id: str = "MRN-4711-XYZ", frames: int, fps: int = 25
) -> Path:
    """A Video Endoscopic Image Storage instance carrying an MP4 with its own identifiers."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = MPEG4HP41
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient, patient_id, "19610304", "M"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.Modality = "20240305", "101112", "ACC-99881", "ES"
    ds.InstitutionName, ds.ReferringPhysicianName = "Saint Examplia Hospital", "HOUSE^GREGORY"
    ds.OperatorsName, ds.StudyDescription = "NURSE^RATCHED", "Lap chole DOE JOHNATHAN"
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber = "Olympus", "CV-190", "SN-778899"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.FrameTime, ds.CineRate = H, W, frames, str(1000 / fps), fps
    ds.FrameIncrementPointer = 0x00181063
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "YBR_PARTIAL_420", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([stream], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    return path


def copy_pydicom(name: str, dest: Path) -> Path:
    out = dest / Path(name).name
    shutil.copyfile(pydicom_file(name), out)
    return out


def dicom_variant(src: Path, out: Path, **changes: object) -> Path:
    """A copy of a test file with attributes changed (e.g. a second study of the same patient)."""
    ds = pydicom.dcmread(src)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(out)
    return out


def jpeg_with_exif(path: Path, rgb: np.ndarray, who: str) -> Path:
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "EndoCam", "EC-1"  # Make, Model
    exif[0x013B], exif[0x010E] = who, f"Patient {who}"  # Artist, ImageDescription
    exif[0x8298] = f"(c) {who}"  # Copyright
    img.save(path, format="JPEG", exif=exif.tobytes(), comment=f"COM {who}".encode(), quality=90)
    return path


def png_with_text(path: Path, rgb: np.ndarray, who: str) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", who)
    info.add_itxt("Description", f"patient {who}")
    Image.fromarray(rgb).save(path, format="PNG", pnginfo=info)
    return path


def needle_forms(needle: str, encodings: Sequence[str] = ()) -> set[bytes]:
    forms = {needle.encode(), needle.casefold().encode(), needle.encode("utf-16-le"), needle.encode("utf-16-be")}
    for enc in encodings:
        try:
            forms.add(needle.encode(enc))
        except (UnicodeEncodeError, LookupError):
            pass
    return {f for f in forms if f}


def find_needles(root: Path, needles: Iterable[str], encodings: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Every (needle, file) where an identifier survives in any output byte, in any of its encodings."""
    blobs = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    lowered = {p: b.lower() for p, b in blobs.items()}
    hits = []
    for needle in needles:
        for form in needle_forms(needle, encodings):
            for p, blob in blobs.items():
                if form in blob or form.lower() in lowered[p]:
                    hits.append((needle, str(p.relative_to(root))))
    for needle in needles:  # file and folder names count as output bytes too
        hits += [(needle, str(p.relative_to(root))) for p in root.rglob("*") if needle.casefold() in p.name.casefold()]
    return sorted(set(hits))
