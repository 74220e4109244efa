"""The same image twice: within a split it counts once, across splits it is reported.

Two rules, applied by the DataModules:

* **within a split**, the same *file* (one device and inode: a path written twice, a CSV row repeated, a symbolic or
  hard link to the same photo) counts once: a repeat with the same target is dropped (the first kept), with one
  warning giving the count and an example, so it is neither trained on twice nor held out for validation while its
  twin trains; a repeat with a *different* target (the same photo linked into ``cat/`` and ``dog/``) is an error
  naming both entries, since one of the two labels is wrong;
* **across splits** (train, val, test), the same file *or a byte-identical copy* (files of equal size are compared
  by a BLAKE2 hash of their content; files of distinct sizes are never read) is a warning naming the count and an
  example. The splits stay as given (some datasets ship val = test on purpose), but the metric then partly measures
  training images.

Two copies of one photo inside one split (different files, same bytes) are left alone: generated data often holds
identical images on purpose, and a copy counted twice biases nothing but the sampling weight.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Hashable, Mapping, Sequence

from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["drop_repeats", "same_file_groups", "warn_overlaps"]

_CHUNK = 1 << 20


def _digest(path: str) -> str | None:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def same_file_groups(paths: Sequence[str], copies: bool = False) -> list[list[int]]:
    """Groups of two or more indices of ``paths`` that are the same file (with ``copies``: or hold the same bytes).

    A path that cannot be read is in no group (the bad-file scan reports it).

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> for name, data in (("a.png", b"x"), ("b.png", b"y"), ("c.png", b"x")):
        ...     with open(os.path.join(root, name), "wb") as f:
        ...         _ = f.write(data)
        >>> paths = [os.path.join(root, n) for n in ("a.png", "b.png", "c.png", "a.png")]
        >>> same_file_groups(paths), same_file_groups(paths, copies=True)
        ([[0, 3]], [[0, 2, 3]])
    """
    identities: dict[tuple[int, int], list[int]] = {}
    sizes: dict[tuple[int, int], int] = {}
    for index, path in enumerate(paths):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        key = (stat.st_dev, stat.st_ino)
        identities.setdefault(key, []).append(index)
        sizes[key] = stat.st_size
    if not copies:
        return sorted(group for group in identities.values() if len(group) > 1)
    by_size: dict[int, list[tuple[int, int]]] = {}
    for key, size in sizes.items():
        by_size.setdefault(size, []).append(key)
    merged: dict[Hashable, list[int]] = {}
    for size, keys in by_size.items():
        for key in keys:
            content = _digest(paths[identities[key][0]]) if len(keys) > 1 else None
            merged.setdefault(("bytes", size, content) if content else ("file", key), []).extend(identities[key])
    return sorted(sorted(group) for group in merged.values() if len(group) > 1)


def drop_repeats(
    groups: Sequence[Sequence[int]], targets: Sequence[Hashable], describe: Callable[[int], str], where: str
) -> set[int]:
    """The indices to drop so each image counts once in its split; an error when two copies disagree on the target.

    Args:
        groups: From :func:`same_file_groups` over the split's paths.
        targets: A comparable target per index (a class, a sorted label tuple, a value tuple).
        describe: Names an entry for messages (``"row 3 (line 4)"`` or a path).
        where: The split, for messages (``"`train_csv` 'train.csv'"``).

    Raises:
        ValueError: Two entries of one image have different targets.
    """
    dropped: set[int] = set()
    for group in groups:
        first = group[0]
        for other in group[1:]:
            if targets[other] != targets[first]:
                raise ValueError(
                    f"{where}: {describe(first)} and {describe(other)} are the same image with different targets"
                    f" ({targets[first]!r} and {targets[other]!r}). One of them is wrong: remove it or fix its label."
                )
        dropped.update(group[1:])
    if dropped:
        example = next(group for group in groups if len(group) > 1)
        rank_zero_warn(
            f"{where}: {len(dropped)} entr{'y is a repeat' if len(dropped) == 1 else 'ies are repeats'} of another"
            f" (the same file, or a link to it; e.g. {describe(example[0])} and {describe(example[1])}). Each image"
            " counts once: the repeats are left out."
        )
    return dropped


def warn_overlaps(splits: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], int]:
    """Warn when the same image is in two splits; return the count per pair of splits.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> open(path, "wb").close()
        >>> warn_overlaps({"train": [path], "test": [path]})
        {('train', 'test'): 1}
    """
    names = list(splits)
    owner = [(name, path) for name in names for path in splits[name]]
    counts: dict[tuple[str, str], int] = {}
    examples: dict[tuple[str, str], tuple[str, str]] = {}
    for group in same_file_groups([path for _, path in owner], copies=True):
        members = [owner[i] for i in group]
        seen: dict[str, str] = {}
        for name, path in members:
            seen.setdefault(name, path)
        in_splits = [n for n in names if n in seen]
        for i, a in enumerate(in_splits):
            for b in in_splits[i + 1 :]:
                counts[(a, b)] = counts.get((a, b), 0) + 1
                examples.setdefault((a, b), (seen[a], seen[b]))
    for (a, b), count in counts.items():
        first, second = examples[(a, b)]
        rank_zero_warn(
            f"{count} image(s) are in both the {a} and the {b} split (e.g. {first} and {second}): the {b} metrics"
            f" partly measure images the model {'trained on' if a == 'train' else 'was selected on'}. Remove them"
            " from one of the splits."
        )
    return counts
