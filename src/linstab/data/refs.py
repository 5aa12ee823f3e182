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


_INDEX = re.compile(r"[0-9]+")


def parse_index_spec(spec: str, n: int) -> list[int]:
    """Parse ``"3"``, ``"0-9"``, ``"0,2,5-7"`` or ``"all"`` into indices in ``0..n-1``.

    Indices are ASCII digits; a range ``a-b`` needs ``a <= b``. Every part is checked against
    ``n`` before it is expanded, so a range such as ``0-99999999999`` is refused at once.

    Raises:
        ValueError: for malformed specs or indices out of range.
    """
    text = str(spec).strip()
    if text == "all":
        return list(range(n))
    expected = "expected e.g. 0, 0-9, 0,2,5-7 or all (indices >= 0)"
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = (t.strip() for t in part.split("-", 1))
            if not (_INDEX.fullmatch(a) and _INDEX.fullmatch(b)):
                raise ValueError(f"bad index range {part!r} in {spec!r}: {expected}")
            lo, hi = int(a), int(b)
            if lo > hi:
                raise ValueError(
                    f"bad index range {part!r} in {spec!r}: reversed ({lo} > {hi}); write {hi}-{lo}"
                )
        elif _INDEX.fullmatch(part):
            lo = hi = int(part)
        else:
            raise ValueError(f"bad index {part!r} in {spec!r}: {expected}")
        if hi >= n:
            what = f"index {hi}" if lo == hi else f"indices {lo}-{hi}"
            raise ValueError(f"{what} of {spec!r} out of range 0..{n - 1}")
        out.extend(range(lo, hi + 1))
    return out


@dataclass(frozen=True)
class ImageSource:
    """Where images come from (part of a sweep's recipe).

    Attributes:
        kind: ``"default"`` (the 20 lossless foolbox images), ``"jpeg"`` (the lossy JPEG
            CIFAR-10 test set), ``"folder"``, ``"file"`` or ``"array"`` (``.npy``/``.npz``).
        name: ``image_source`` in the rows.
        path: absolute path of the zip, folder, file or array (``None`` for default).
        lossy: the images went through lossy compression (JPEG set; files holding JPEG data,
            by content, whatever their suffix).
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
_LOSSY_FORMATS = ("JPEG", "MPO", "JPEG2000")  # PIL's names of JPEG data (MPO: multi-picture JPEG)


def _is_lossy(path: Path) -> bool:
    """Whether an image file holds JPEG data, by its content (a JPEG saved as ``.png`` is lossy);
    by its suffix where the header cannot be read (the worker then records the error).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.format in _LOSSY_FORMATS
    except (OSError, Image.DecompressionBombError):
        return path.suffix.lower() in _LOSSY_SUFFIXES


def _jpeg_entries(zpath: Path) -> list[tuple[int, int, str]]:
    """``(label, index in class, member)`` in the order of ``jpeg:`` specs (classes interleaved)."""
    return jpeg_members(zpath, 10**9)


def _array_labels(path: Path) -> np.ndarray | None:
    """The ``labels`` of an ``.npz`` (``None``: none), checked to be class indices: integers
    ``>= 0`` (floats only where every value is a whole number), never truncated or cast from bool.

    Raises:
        ValueError: labels that are no class indices, or cannot be read; the message names the file.
    """
    if path.suffix.lower() != ".npz":
        return None
    with np.load(path, allow_pickle=False) as z:
        if "labels" not in z.files:
            return None
        try:
            raw = np.asarray(z["labels"])
        except ValueError as exc:  # pickled objects
            raise ValueError(
                f"{path}: labels cannot be read ({exc}); expected integer class indices"
            ) from None
    labels = raw.reshape(-1)
    expected = "expected integer class indices >= 0"
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{path}: labels of dtype {raw.dtype}; {expected}")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(labels) & (labels == np.round(labels))):
        bad = labels[~(np.isfinite(labels) & (labels == np.round(labels)))]
        raise ValueError(f"{path}: labels are not whole numbers (e.g. {bad[:3].tolist()}); {expected}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"{path}: negative labels (e.g. {labels[labels < 0][:3].tolist()}); {expected}")
    return labels.astype(np.int64)


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
        ValueError: for a malformed spec, indices out of range, an empty selection, ``.npz``
            labels that are not class indices (integers >= 0), or indices such as ``3`` that also
            name an existing path here (write ``./3`` for the path).
        FileNotFoundError: when the JPEG set is not found.
    """
    text = str(spec).strip()
    if not text:
        raise ValueError("empty image spec: expected e.g. 0-19, all, jpeg:0-99 or a path")
    if text.startswith("jpeg:"):
        sub = text[len("jpeg:") :].strip()
        if not sub:
            raise ValueError("empty selection 'jpeg:': give indices, e.g. jpeg:0-99 or jpeg:all")
        if sub != "all":  # the syntax first: a bad spec is named before any folder is looked for
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
    looks_like_indices = text == "all" or all(c in "0123456789,- " for c in text)
    if looks_like_indices and Path(text).exists():
        raise ValueError(
            f"image spec {text!r} is ambiguous: default-image indices, and the path "
            f"{Path(text).resolve()} exists; write ./{text} for the path, or run from another folder "
            "for the default images"
        )
    if looks_like_indices:
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
    if not path.exists() and text.endswith(":") and Path(text[:-1]).expanduser().exists():
        raise ValueError(f"empty index spec after ':' in {text!r}: give e.g. {text}0-9 or {text}all")
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
        lossy_files = [_is_lossy(p) for p in files]
        lossy = any(lossy_files)
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
                lossy=lossy_files[i],
            )
            for i in idx
        ]
        return _selection(src, text, refs)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        if sub:
            raise ValueError(f"{path} is one image file: no index spec allowed")
        src = ImageSource("file", f"file:{path}", str(path), _is_lossy(path), sha256_file(path), 1)
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


def image_shape(ref: ImageRef | dict) -> tuple[int, int, int] | None:
    """The ``(C, H, W)`` that :func:`load_image` gives for ``ref``, from headers only (nothing
    decoded); ``None`` where the header cannot be read (loading the image reports that).
    """
    from PIL import Image

    ref = ref if isinstance(ref, ImageRef) else ImageRef(**ref)
    if ref.kind in ("default", "jpeg"):
        return (3, 32, 32)
    if ref.kind == "file":
        try:
            with Image.open(ref.path) as im:
                w, h = im.size
        except (OSError, Image.DecompressionBombError):
            return None
        return (3, int(h), int(w))
    if ref.kind == "array":
        try:
            arr = read_array(ref.path, mmap=True)  # the header; not the workers' cached array
        except (ValueError, OSError):
            return None
        shape = arr.shape if arr.ndim == 3 else arr.shape[1:]
        # the layout load_image reads, without touching the data
        return tuple(int(v) for v in channels_first(np.broadcast_to(np.zeros((), np.uint8), shape)).shape)
    return None


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
