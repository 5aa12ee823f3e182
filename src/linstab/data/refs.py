"""Image references: what an image spec names -- the 20 lossless default images, the lossy JPEG
test set (``jpeg:0-999``), a folder, an image file or an array file -- without decoding anything,
and :func:`load_image` to decode one reference where it is needed (a sweep's worker, or
:func:`~linstab.data.selection.select_images`). The one parser of image specs.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..io.hashing import sha256_file
from .cifar10_jpeg import cifar10_jpeg_dir, jpeg_members
from .images import (
    DEFAULT_LABELS,
    IMAGE_SUFFIXES,
    channels_first,
    check_images,
    default_images,
    image_files,
    load_images,
    read_array,
)

DEFAULT_SOURCE = "cifar10-test-lossless"
JPEG_SOURCE = "cifar10-jpeg-test"


def parse_index_spec(spec: str, n: int) -> list[int]:
    """Parse ``"3"``, ``"0-9"``, ``"0,2,5-7"`` or ``"all"`` into indices in ``0..n-1``.

    Raises:
        ValueError: for malformed specs or indices out of range.
    """
    text = str(spec).strip()
    if text == "all":
        return list(range(n))
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()) or int(a) > int(b):
                raise ValueError(f"bad index range {part!r} in {spec!r}")
            out.extend(range(int(a), int(b) + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise ValueError(f"bad index {part!r} in {spec!r}: expected e.g. 0, 0-9, 0,2,5-7 or all")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise ValueError(f"indices {bad} out of range 0..{n - 1}")
    return out


@dataclass(frozen=True)
class ImageSource:
    """Where images come from (part of a sweep's recipe).

    Attributes:
        kind: ``"default"`` (the 20 lossless foolbox images), ``"jpeg"`` (the lossy JPEG
            CIFAR-10 test set), ``"folder"``, ``"file"`` or ``"array"`` (``.npy``/``.npz``).
        name: ``image_source`` in the rows.
        path: absolute path of the zip, folder, file or array (``None`` for default).
        lossy: the images went through lossy compression (JPEG set; ``.jpg`` files).
        sha256: checksum of the zip/file/array, or of a folder's sorted file names and contents.
        size: number of images in the source.
    """

    kind: str
    name: str
    path: str | None
    lossy: bool
    sha256: str | None
    size: int

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class ImageRef:
    """One image of a source, loadable by a worker (:func:`load_image`).

    Attributes:
        id: readable unique id (``cifar10-test-3``, ``cifar10-jpeg-test-17``, a file name,
            ``images.npy[5]``).
        index: index in the source.
        label: the true label, ``None`` when unknown (user files, arrays without labels).
        kind: the source kind.
        path: file/zip/array path (``None`` for default images).
        member: zip member (JPEG) or ``None``.
        source: the source's name.
        lossy: see :class:`ImageSource`.
    """

    id: str
    index: int
    label: int | None
    kind: str
    path: str | None
    member: str | None
    source: str
    lossy: bool

    def to_dict(self) -> dict:
        """The fields as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class ImageRefs:
    """A source and the selected images (references; nothing decoded)."""

    source: ImageSource
    spec: str
    refs: tuple[ImageRef, ...]


_LOSSY_SUFFIXES = (".jpg", ".jpeg")


def _jpeg_entries(zpath: Path) -> list[tuple[int, int, str]]:
    """``(label, index in class, member)`` in the order of ``jpeg:`` specs (classes interleaved)."""
    return jpeg_members(zpath, 10**9)


def _array_labels(path: Path) -> np.ndarray | None:
    if path.suffix.lower() != ".npz":
        return None
    with np.load(path, allow_pickle=False) as z:
        if "labels" not in z.files:
            return None
        return np.asarray(z["labels"]).reshape(-1)


def _array_len(path: Path) -> int:
    arr = read_array(path, mmap=True)
    if arr.ndim == 3:
        return 1
    if arr.ndim != 4:
        raise ValueError(f"{path}: expected images shaped (N, 3, H, W) or (N, H, W, 3), got {arr.shape}")
    return int(arr.shape[0])


def _split_path_spec(text: str) -> tuple[str, str | None]:
    """``PATH`` or ``PATH:SPEC`` (an index spec into an array file or folder)."""
    if Path(text).expanduser().exists():
        return text, None
    m = re.match(r"^(.*):([0-9,\- ]+|all)$", text)
    if m and Path(m.group(1)).expanduser().exists():
        return m.group(1), m.group(2)
    return text, None


def image_refs(spec: str) -> ImageRefs:
    """Parse an image spec into a source and image references (nothing is decoded).

    Specs:

    * ``0-19``, ``0,3,7``, ``all``: the 20 lossless CIFAR-10 test images shipped with foolbox;
    * ``jpeg:SPEC`` (``jpeg:0-9999``, ``jpeg:all``): the lossy JPEG CIFAR-10 test set in
      ``$LINSTAB_CIFAR10_JPEG/test.zip``; index ``i`` is image ``i`` of
      ``load_cifar10_jpeg("test", limit=10000)`` (classes interleaved, so any prefix is
      class-balanced); every row is labelled lossy;
    * ``PATH`` or ``PATH:SPEC``: a folder of PNG/JPEG/BMP files (sorted by name), one image
      file, or a ``.npy``/``.npz`` array (``.npz``: ``images`` and optional ``labels``).

    Raises:
        ValueError: for a malformed spec, indices out of range or an empty selection.
        FileNotFoundError: when the JPEG set is not found.
    """
    text = str(spec).strip()
    if not text:
        raise ValueError("empty image spec: expected e.g. 0-19, all, jpeg:0-99 or a path")
    if text.startswith("jpeg:"):
        sub = text[len("jpeg:") :].strip()
        if not sub:
            raise ValueError("empty selection 'jpeg:': give indices, e.g. jpeg:0-99 or jpeg:all")
        if sub.lower() != "all":  # the syntax first: a bad spec is named before any folder is looked for
            parse_index_spec(sub, 10**6)
        zpath = (cifar10_jpeg_dir() / "test.zip").resolve()
        if not zpath.is_file():
            raise FileNotFoundError(f"{zpath} not found (set LINSTAB_CIFAR10_JPEG)")
        entries = _jpeg_entries(zpath)
        idx = parse_index_spec(sub, len(entries))
        src = ImageSource("jpeg", JPEG_SOURCE, str(zpath), True, sha256_file(zpath), len(entries))
        refs = []
        for i in idx:
            label, _, member = entries[i]
            refs.append(
                ImageRef(
                    id=f"cifar10-jpeg-test-{i}",
                    index=i,
                    label=label,
                    kind="jpeg",
                    path=str(zpath),
                    member=member,
                    source=src.name,
                    lossy=True,
                )
            )
        return _selection(src, text, refs)
    looks_like_indices = text == "all" or all(c.isdigit() or c in ",- " for c in text)
    if looks_like_indices and not Path(text).exists():
        idx = parse_index_spec(text, 20)
        src = ImageSource("default", DEFAULT_SOURCE, None, False, None, 20)
        refs = [
            ImageRef(
                id=f"cifar10-test-{i}",
                index=i,
                label=int(DEFAULT_LABELS[i]),
                kind="default",
                path=None,
                member=None,
                source=src.name,
                lossy=False,
            )
            for i in idx
        ]
        return _selection(src, text, refs)
    raw, sub = _split_path_spec(text)
    path = Path(raw).expanduser()
    if not path.exists():
        raise ValueError(
            f"bad image spec {text!r}: not default-image indices (0-19, all), not jpeg:SPEC and "
            "not an existing path"
        )
    path = path.resolve()
    if path.is_dir():
        try:
            files = image_files(path)
        except ValueError as exc:
            raise ValueError(f"empty selection: {exc}") from None
        # names and contents: a file rewritten with other pixels but the same size (BMP) is a change
        listing = "\n".join(f"{p.name}\t{sha256_file(p)}" for p in files)
        lossy = any(p.suffix.lower() in _LOSSY_SUFFIXES for p in files)
        digest = hashlib.sha256(listing.encode()).hexdigest()
        src = ImageSource("folder", f"folder:{path}", str(path), lossy, digest, len(files))
        idx = parse_index_spec(sub, len(files)) if sub else list(range(len(files)))
        refs = [
            ImageRef(
                id=files[i].name,
                index=i,
                label=None,
                kind="file",
                path=str(files[i]),
                member=None,
                source=src.name,
                lossy=files[i].suffix.lower() in _LOSSY_SUFFIXES,
            )
            for i in idx
        ]
        return _selection(src, text, refs)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if sub:
            raise ValueError(f"{path} is one image file: no index spec allowed")
        src = ImageSource("file", f"file:{path}", str(path), suffix in _LOSSY_SUFFIXES, sha256_file(path), 1)
        ref = ImageRef(path.name, 0, None, "file", str(path), None, src.name, src.lossy)
        return _selection(src, text, [ref])
    if suffix in (".npy", ".npz"):
        n = _array_len(path)
        labels = _array_labels(path)
        if labels is not None and labels.shape[0] != n:
            raise ValueError(f"{path}: {labels.shape[0]} labels for {n} images")
        src = ImageSource("array", f"array:{path}", str(path), False, sha256_file(path), n)
        if n == 0:
            raise ValueError(f"empty selection: {path} holds no images")
        idx = parse_index_spec(sub, n) if sub else list(range(n))
        refs = [
            ImageRef(
                id=f"{path.name}[{i}]",
                index=i,
                label=None if labels is None else int(labels[i]),
                kind="array",
                path=str(path),
                member=None,
                source=src.name,
                lossy=False,
            )
            for i in idx
        ]
        return _selection(src, text, refs)
    raise ValueError(
        f"unsupported image source {path}: expected a folder, .png/.jpg/.jpeg/.bmp, .npy or .npz"
    )


def _selection(src: ImageSource, spec: str, refs: list[ImageRef]) -> ImageRefs:
    if not refs:
        raise ValueError(f"empty selection: image spec {spec!r} selects no image")
    ids = [r.id for r in refs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"image spec {spec!r} selects images more than once: {dup[:5]}")
    return ImageRefs(src, spec, tuple(refs))


_ARRAYS: dict[str, np.ndarray] = {}


def _array(path: str) -> np.ndarray:
    if path not in _ARRAYS:
        arr = read_array(path, mmap=True)
        if arr.ndim == 3:
            arr = arr[None]
        _ARRAYS.clear()  # one array per worker process
        _ARRAYS[path] = arr
    return _ARRAYS[path]


def load_image(ref: ImageRef | dict) -> tuple[torch.Tensor, int | None]:
    """Load one image on a worker: ``((3, H, W)`` float32 in [0, 1], label or ``None``).

    Raises:
        ValueError, OSError: for unreadable or invalid images (NaN, outside [0, 1], bad shape).
    """
    ref = ref if isinstance(ref, ImageRef) else ImageRef(**ref)
    if ref.kind == "default":
        x, y = default_images([ref.index])
        return x[0], int(y[0])
    if ref.kind == "jpeg":
        from PIL import Image

        with zipfile.ZipFile(ref.path) as zf, Image.open(io.BytesIO(zf.read(ref.member))) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), ref.label
    if ref.kind == "file":
        x = load_images(ref.path)
        return x[0], ref.label
    if ref.kind == "array":
        a = np.array(_array(ref.path)[ref.index])  # a copy: the array may be memory-mapped
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        a = channels_first(a)
        x = check_images(torch.from_numpy(np.ascontiguousarray(a)), name=ref.id, channels=None).float()
        return x[0], ref.label
    raise ValueError(f"unknown image kind {ref.kind!r}")
