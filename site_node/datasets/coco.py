"""COCO adapter: images grouped into videos (`video_name`, `{video}_{frame}` file names), boxes in absolute xywh."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocols.errors import DataError
from protocols.tasks import TaskDefinition
from site_node.datasets.common import DatasetFormat, Found, frame_number, line_of, load_json, video_of_stem
from site_node.labels import AliasIndex, LabelledBox
from site_node.store import FrameLabels, LabelKind


@dataclass(frozen=True)
class CocoImage:
    """One image entry: which video and frame it is, where its pixels are, and its size."""

    image_id: Any
    video: str
    frame: int
    path: Path
    size: tuple[int, int] | None
    entry: dict[str, Any]
    line: int


def _identity(image: dict[str, Any]) -> tuple[str, int]:
    """Video and frame of an image: explicit fields, then the `{video}_{frame}` file name, else the image alone."""
    stem = Path(str(image.get("file_name", ""))).stem
    video = image.get("video_name") or video_of_stem(stem) or (str(image["video_id"]) if "video_id" in image else stem)
    frame = image.get("frame_id")
    if not isinstance(frame, int) or isinstance(frame, bool):
        frame = frame_number(stem) if video_of_stem(stem) else 0
    return str(video), int(frame if frame is not None else 0)


def coco_images(path: Path) -> tuple[dict[str, Any], str, list[CocoImage]]:
    """(data, text, images) of a COCO JSON; images resolve relative to the JSON's folder."""
    data, text = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}:1: a COCO file needs an `images` list")
    images = []
    for n, image in enumerate(data["images"]):
        name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(name, str) or not name or ".." in Path(name).parts:
            raise DataError(f"{path}:{line_of(text, str(name))}: images[{n}]: bad file_name {name!r}")
        w, h = image.get("width"), image.get("height")
        size = (
            (int(w), int(h))
            if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0
            else None
        )
        video, frame = _identity(image)
        images.append(
            CocoImage(image.get("id"), video, frame, Path(path).parent / name, size, image, line_of(text, name))
        )
    return data, text, images


def videos_in(path: Path) -> dict[str, list[CocoImage]]:
    out: dict[str, list[CocoImage]] = {}
    for image in coco_images(path)[2]:
        out.setdefault(image.video, []).append(image)
    return out


def unique_frames(images: list[CocoImage], path: Path) -> None:
    seen: dict[int, CocoImage] = {}
    for im in images:
        if im.frame in seen:
            raise DataError(
                f"{path}:{im.line}: {im.path.name} and {seen[im.frame].path.name} are both frame {im.frame} "
                f"of video {im.video!r}"
            )
        seen[im.frame] = im


def _category_names(data: dict[str, Any], path: Path) -> dict[Any, str]:
    cats = data.get("categories", [])
    if not isinstance(cats, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise DataError(f"{path}: `categories` must be a list of {{id, name}}")
    return {c["id"]: str(c["name"]) for c in cats}


def read_labels(path: Path, kind: LabelKind, task: TaskDefinition, video_id: str) -> FrameLabels:
    """Boxes of one video's images, normalised to xyxy and named by the task's labels (by category name)."""
    path = Path(path)
    data, text, images = coco_images(path)
    mine = {im.image_id: im for im in images if im.video == video_id}
    if not mine:
        raise DataError(f"{path}: no images of video {video_id!r}")
    unique_frames(list(mine.values()), path)
    names, index = _category_names(data, path), AliasIndex.of(task)
    boxes: dict[int, list[LabelledBox]] = {}
    for n, ann in enumerate(data.get("annotations") or []):
        image = mine.get(ann.get("image_id")) if isinstance(ann, dict) else None
        if image is None:
            continue
        where = f"{path}:{line_of(text, str(ann.get('id', image.path.name)))}: annotations[{n}]"
        raw = names.get(ann.get("category_id"), str(ann.get("category_id")))
        label = index.canonical(raw)
        if label is None:
            raise DataError(f"{where}: unknown class {raw!r}; expected one of {list(task.label_names)}")
        boxes.setdefault(image.frame, []).append(_box(ann.get("bbox"), image, label, where))
    return FrameLabels(
        boxes,
        images={im.frame: im.path for im in mine.values()},
        sizes={im.frame: im.size for im in mine.values() if im.size},
    )


def _box(bbox: Any, image: CocoImage, label: str, where: str) -> LabelledBox:
    if image.size is None:
        raise DataError(f"{where}: image {image.path.name} has no width/height to normalise its boxes")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise DataError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
    x, y, w, h = bbox
    W, H = image.size
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > W + 1 or y + h > H + 1:
        raise DataError(f"{where}: bbox {bbox!r} is empty or outside the {W}x{H} image")
    return LabelledBox(label, x / W, y / H, min(1.0, (x + w) / W), min(1.0, (y + h) / H))


def label_files(root: Path, has: str) -> tuple[list[Path], dict[str, str]]:
    """COCO JSON files under root (or root itself) whose images or annotations carry `has`; unreadable ones apart."""
    files = [root] if root.is_file() else sorted(root.rglob("*.json"))
    out, broken = [], {}
    for path in files:
        try:
            data, _ = load_json(path)
        except DataError as exc:
            broken[path.name] = str(exc)
            continue
        if isinstance(data, dict) and isinstance(data.get("images"), list) and carries(data, has):
            out.append(path)
    return out, broken


def first_coco_data(folder: Path) -> dict[str, Any] | None:
    """The first JSON directly in a folder (by name) that reads as COCO (has an `images` list); None without one."""
    for js in sorted(folder.glob("*.json")):
        try:
            data, _ = load_json(js)
        except DataError:
            continue
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            return data
    return None


def carries(data: dict[str, Any], has: str) -> bool:
    """Whether a COCO file has boxes (`has` = "bbox") or image-level CVS values (`has` = "ds", or C1-C3)."""
    if has == "bbox":
        return any(isinstance(a, dict) and "bbox" in a for a in data.get("annotations") or [])
    return any(isinstance(i, dict) and (has in i or "C1" in i) for i in data["images"])


def find_videos(root: Path) -> tuple[list[Found], dict[str, str]]:
    """Every video of every COCO box file under root; frames are the files the JSON names."""
    found: list[Found] = []
    paths, skipped = label_files(root, "bbox")
    for path in paths:
        for video, images in videos_in(path).items():
            found.append(Found(video, None, {LabelKind.BOXES: path}, n_frames=max(i.frame for i in images) + 1))
    if not found and not skipped:
        raise DataError(f"{root}: no COCO files with boxes (a JSON with `images` and `annotations[].bbox`)")
    return found, skipped


def _looks_like(folder: Path) -> bool:
    """The folder's first COCO JSON has no CVS values (those are Endoscapes')."""
    data = first_coco_data(folder)
    return data is not None and not carries(data, "ds")


FORMAT = DatasetFormat(
    name="coco",
    find=find_videos,
    looks_like=_looks_like,
    reads=lambda kind, path: kind is LabelKind.BOXES and path.suffix.lower() == ".json",
    read=read_labels,
)
