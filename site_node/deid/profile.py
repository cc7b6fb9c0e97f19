"""The de-identification profile (Annex E as data): loading, `extends`, and validation against pydicom's dictionary."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword

from protocols.errors import ConfigError
from protocols.mapping import check_mapping
from site_node.deid.overlay import RecorderRule, parse_rules


class Action(str, Enum):
    """What happens to one attribute (PS3.15 Table E.1-1a), after compound codes are resolved."""

    DUMMY = "D"
    ZERO = "Z"
    REMOVE = "X"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    UID_IN_SEQUENCE = "U*"


_SIMPLE = {a.value for a in Action}
_COMPOUND = {"X/Z", "X/D", "Z/D", "X/Z/D", "X/Z/U*"}
_TOP_KEYS = {
    "name", "description", "extends", "uid_root", "date_shift_days", "resolve", "pseudonym_attributes",
    "dummies", "options", "enabled", "recorders", "video", "attributes", "text_formats", "unknown_devices",
}  # fmt: skip
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")


class UnknownDevices(str, Enum):
    """What happens to a video whose device matches no recorder rule (its overlay layout is unknown)."""

    QUARANTINE = "quarantine"
    ASSUME_CLEAN = "assume-clean"


@dataclass(frozen=True)
class DeidOption:
    name: str
    code: str
    meaning: str


@dataclass(frozen=True)
class VideoSettings:
    """How videos and frame folders are rewritten; the encoder settings are also the benchmark's."""

    encoder: str = "libx264"
    preset: str = "veryfast"
    crf: int = 18
    threads: int = 0
    out_of_body_margin_s: float = 0.5
    frame_folder_margin: int = 1
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.encoder != "libx264":
            raise ConfigError(f"video.encoder must be libx264 (H.264 output), got {self.encoder!r}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"video.crf must be in 0..51, got {self.crf}")
        if self.threads < 0 or self.out_of_body_margin_s < 0 or self.frame_folder_margin < 0:
            raise ConfigError("video.threads and the out-of-body margins must not be negative")
        if not 50 <= self.jpeg_quality <= 100:
            raise ConfigError(f"video.jpeg_quality must be in 50..100, got {self.jpeg_quality}")


@dataclass(frozen=True)
class DeidProfile:
    """A resolved profile: one action per DICOM tag, the options used, device rules, video settings."""

    name: str
    source: str
    uid_root: str
    date_shift: tuple[int, int]
    actions: Mapping[int, Action]
    options: tuple[DeidOption, ...]
    pseudonym_tags: frozenset[int]
    dummies: Mapping[str, str]
    recorders: tuple[RecorderRule, ...]
    video: VideoSettings
    digest: str
    text_formats: tuple[str, ...] = ()  # label formats plain `deid` may rebuild; other text is quarantined
    unknown_devices: UnknownDevices = UnknownDevices.QUARANTINE

    def enabled(self, option: str) -> bool:
        return any(o.name == option for o in self.options)

    @property
    def method_codes(self) -> list[tuple[str, str]]:
        """(code, meaning) for DeidentificationMethodCodeSequence: the basic profile plus the options used."""
        return [BASIC_PROFILE_CODE] + [(o.code, o.meaning) for o in self.options]


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    return check_mapping(data, f"{source}: the top level", _TOP_KEYS)


def _builtin_text(name: str) -> str:
    ref = resources.files("protocols.deid").joinpath(name)
    if not ref.is_file():
        known = sorted(p.name for p in resources.files("protocols.deid").iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown de-identification profile file {name!r}; built-in: {known}")
    return ref.read_text(encoding="utf-8")


def _load_raw(ref: str, base_dir: Path | None) -> tuple[dict[str, Any], str, Path | None]:
    """A profile by built-in name ('basic') or by path; returns (data, source, folder for relative refs)."""
    if re.fullmatch(r"[a-z][a-z0-9_-]*", ref) and not (base_dir and (base_dir / ref).exists()):
        source = f"protocols/deid/{ref}.yaml"
        return _read_yaml(_builtin_text(f"{ref}.yaml"), source), source, None
    path = Path(ref) if base_dir is None or Path(ref).is_absolute() else base_dir / ref
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read de-identification profile {path}: {exc.strerror or exc}") from exc
    return _read_yaml(text, str(path)), str(path), path.parent


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if key in ("attributes", "video", "dummies", "resolve") and isinstance(value, dict):
            merged[key] = {**(base.get(key) or {}), **value}
        elif key == "recorders":
            merged["_child_recorders"] = value
        elif key != "extends":
            merged[key] = value
    return merged


def _tag(keyword: str, source: str, where: str) -> int:
    tag = tag_for_keyword(str(keyword))
    if tag is None:
        near = difflib.get_close_matches(str(keyword), list(keyword_dict), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"{source}: {where}: {keyword!r} is not a DICOM keyword in pydicom's data dictionary{hint}")
    return int(tag)


def _vrs(tag: int) -> set[str]:
    return set(dictionary_VR(tag).split(" or "))


def _resolve_actions(data: dict[str, Any], source: str, enabled: list[str]) -> dict[int, Action]:
    resolve = data.get("resolve") or {}
    bad = sorted(set(resolve) - _COMPOUND) + sorted(str(v) for v in resolve.values() if v not in _SIMPLE)
    if bad or set(resolve) != _COMPOUND:
        raise ConfigError(f"{source}: `resolve` must map each of {sorted(_COMPOUND)} to one of {sorted(_SIMPLE)}")
    attrs = data.get("attributes")
    if not isinstance(attrs, dict) or not attrs:
        raise ConfigError(f"{source}: `attributes` must be a non-empty mapping of DICOM keyword -> action")
    actions: dict[int, Action] = {}
    for kw, code in attrs.items():
        tag = _tag(kw, source, "attributes")
        if code not in _SIMPLE | _COMPOUND:
            raise ConfigError(
                f"{source}: attributes: {kw}: unknown action {code!r}; expected one of {sorted(_SIMPLE | _COMPOUND)}"
            )
        actions[tag] = Action(resolve.get(code, code))
    options = data.get("options") or {}
    if "retain_longitudinal_modified_dates" in enabled:
        opt = options["retain_longitudinal_modified_dates"]
        keep_out = {_tag(k, source, "options.except") for k in opt.get("except") or ()}
        for tag in actions:
            if tag not in keep_out and _vrs(tag) & set(opt.get("vrs") or ()):
                actions[tag] = Action.CLEAN
    if "clean_descriptors" in enabled:
        for kw in options["clean_descriptors"].get("attributes") or ():
            actions[_tag(kw, source, "options.clean_descriptors")] = Action.CLEAN
    return actions


def _options(data: dict[str, Any], source: str) -> tuple[list[str], tuple[DeidOption, ...]]:
    options = data.get("options") or {}
    enabled = list(data.get("enabled") or [])
    unknown = sorted(set(enabled) - set(options))
    if unknown:
        raise ConfigError(f"{source}: enabled options {unknown} are not defined; defined: {sorted(options)}")
    used = []
    for name in enabled:
        opt = options[name]
        if not isinstance(opt, dict) or not re.fullmatch(r"1131\d\d", str(opt.get("code", ""))):
            raise ConfigError(f"{source}: option {name} needs a DCM code 1131xx (CID 7050), got {opt!r}")
        used.append(DeidOption(name, str(opt["code"]), str(opt.get("meaning", name))))
    return enabled, tuple(used)


def _recorders(value: Any, source: str, folder: Path | None) -> tuple[RecorderRule, ...]:
    if isinstance(value, str):
        if folder is None:
            text, where = _builtin_text(value), f"protocols/deid/{value}"
        else:
            try:
                text, where = (folder / value).read_text(encoding="utf-8"), str(folder / value)
            except OSError as exc:
                raise ConfigError(f"{source}: cannot read recorders file {folder / value}: {exc.strerror}") from exc
        data = yaml.safe_load(text) or {}
        return parse_rules(data.get("recorders") if isinstance(data, dict) else data, where)
    return parse_rules(value, source)


def _video(data: dict[str, Any], source: str) -> VideoSettings:
    raw = data.get("video") or {}
    try:
        return VideoSettings(**raw)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{source}: invalid video settings: {exc}") from exc


def load_profile(ref: str = "basic") -> DeidProfile:
    """Load a profile by built-in name or path; a site profile may say `extends: basic` and add rules."""
    data, source, folder = _load_raw(ref, None)
    recorders: tuple[RecorderRule, ...] = ()
    if "extends" in data:
        base, base_source, base_folder = _load_raw(str(data["extends"]), folder)
        if "extends" in base:
            raise ConfigError(f"{base_source}: profiles extend one level only")
        recorders = _recorders(base.get("recorders") or [], base_source, base_folder)
        data = _merge(base, data)
        child = data.pop("_child_recorders", None)
        recorders += _recorders(child or [], source, folder)
    else:
        recorders = _recorders(data.get("recorders") or [], source, folder)
    enabled, options = _options(data, source)
    actions = _resolve_actions(data, source, enabled)
    low, high = (int(v) for v in data.get("date_shift_days") or (-3650, -366))
    if low > high:
        raise ConfigError(f"{source}: date_shift_days [{low}, {high}] is empty")
    uid_root = str(data.get("uid_root") or "")
    if not re.fullmatch(r"([1-9]\d*|0)(\.([1-9]\d*|0))*\.", uid_root) or len(uid_root) > 54:
        raise ConfigError(f"{source}: uid_root {uid_root!r} must be a dotted numeric prefix ending in '.', <= 54 chars")
    pseudo = frozenset(_tag(k, source, "pseudonym_attributes") for k in data.get("pseudonym_attributes") or ())
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    text_formats, unknown = _text_formats(data, source), _unknown_devices(data, source)
    return DeidProfile(
        name=str(data.get("name") or ref),
        source=source,
        uid_root=uid_root,
        date_shift=(low, high),
        actions=actions,
        options=options,
        pseudonym_tags=pseudo,
        dummies={str(k): str(v) for k, v in (data.get("dummies") or {}).items()},
        recorders=recorders,
        video=_video(data, source),
        digest=digest,
        text_formats=text_formats,
        unknown_devices=unknown,
    )


def _text_formats(data: dict[str, Any], source: str) -> tuple[str, ...]:
    from site_node.deid.labels_allowlist import TEXT_FORMATS

    value = data.get("text_formats") or []
    if not isinstance(value, list) or any(v not in TEXT_FORMATS for v in value):
        raise ConfigError(f"{source}: text_formats must be a list of {list(TEXT_FORMATS)}, got {value!r}")
    return tuple(value)


def _unknown_devices(data: dict[str, Any], source: str) -> UnknownDevices:
    value = data.get("unknown_devices", UnknownDevices.QUARANTINE.value)
    try:
        return UnknownDevices(value)
    except ValueError:
        raise ConfigError(
            f"{source}: unknown_devices must be one of {[u.value for u in UnknownDevices]}, got {value!r}"
        ) from None
