"""Finding image files in folders: recursive, sorted, symlinks followed without loops.

Symbolic links are followed, to files and to folders (a class folder that links to images elsewhere works), with
two exceptions that :func:`list_images` reports in one warning:

* a link to a folder that contains the link (``train/cat/loop -> ..``) would repeat the tree forever and put the
  other classes' images under this one; it is not followed;
* a folder reached a second time through another link is listed once.

Hidden entries (a leading ``.``) are skipped. The same image reached from two class folders (a link from ``cat/`` to
a file in ``dog/``) is not decided here: the DataModules report it (:mod:`lit_transfer.data.duplicates`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from lightning.pytorch.utilities import rank_zero_warn

from lit_transfer.data.decode import is_image_file

__all__ = ["has_image", "list_images", "walk_images"]


def _contains(folder: str, path: str) -> bool:
    """Whether the real folder ``folder`` is ``path`` or one of its parents."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk_images(folder: str | os.PathLike, skipped: list[str] | None = None) -> Iterator[str]:
    """Yield the image files under ``folder`` (recursive, links followed without loops), folder by folder.

    Args:
        folder: The folder to search.
        skipped: Gets one ``"link -> target (why)"`` entry per linked folder that was not followed.
    """
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(os.fspath(folder), followlinks=True):
        real = os.path.realpath(dirpath)
        seen.add(real)
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            link = os.path.join(dirpath, name)
            target = os.path.realpath(link)
            if _contains(target, real):
                if skipped is not None:
                    skipped.append(f"{link} -> {target} (a folder that contains the link: a loop)")
                continue
            if target in seen:
                if skipped is not None:
                    skipped.append(f"{link} -> {target} (listed already through another path)")
                continue
            seen.add(target)
            kept.append(name)
        dirnames[:] = kept
        yield from (os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".") and is_image_file(f))


def list_images(folder: str | os.PathLike) -> list[str]:
    """All image files under ``folder`` (recursive, hidden entries skipped, links followed without loops), sorted.

    A linked folder that is not followed (a loop, or a folder listed already) is named in one warning.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(root, "cat"))
        >>> open(os.path.join(root, "cat", "a.png"), "wb").close()
        >>> os.symlink("..", os.path.join(root, "cat", "loop"))
        >>> [os.path.relpath(p, root) for p in list_images(os.path.join(root, "cat"))]
        ['cat/a.png']
    """
    skipped: list[str] = []
    found = sorted(walk_images(folder, skipped))
    if skipped:
        shown = "\n".join(f"  {entry}" for entry in skipped[:10])
        more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        rank_zero_warn(f"Not following {len(skipped)} linked folder(s) under {os.fspath(folder)!r}:\n{shown}{more}")
    return found


def has_image(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` contains at least one image file (stops at the first one found)."""
    return next(walk_images(folder), None) is not None
