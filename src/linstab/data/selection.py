"""Image selections given as text: index specs (``0-9``, ``0,3,7``, ``all``)."""

from __future__ import annotations


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
