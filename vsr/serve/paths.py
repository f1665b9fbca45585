"""The folder the page may see: every path the page names is relative to ``--root`` and is refused when it
leaves it, by ``..`` or by a symbolic link that points outside."""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import VsrError
from ..images import IMAGE_SUFFIXES
from ..video import VIDEO_SUFFIXES


class OutsideRoot(VsrError):
    """A path that is not inside the root (the page answers 403)."""


class Root:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise VsrError(f"--root {folder} is not a folder; give an existing folder")

    def resolve(self, rel: str) -> Path:
        """The real path of ``rel`` (a path relative to the root, '/'-separated; '' is the root itself)."""
        parts = PurePosixPath(rel.replace("\\", "/")).parts if rel else ()
        if rel.startswith(("/", "\\")) or any(p == ".." for p in parts) or "\x00" in rel:
            raise OutsideRoot(f"{rel!r}: give a path inside the root folder, without '..'")
        path = self.folder.joinpath(*parts).resolve()  # follows links: a link out of the root is caught here
        if not path.is_relative_to(self.folder):
            raise OutsideRoot(f"{rel!r} leads outside the root folder")
        return path

    def relative(self, path: Path) -> str:
        """How the page names ``path`` (an absolute path inside the root)."""
        rel = Path(path).resolve().relative_to(self.folder).as_posix()
        return "" if rel == "." else rel

    def listing(self, rel: str) -> dict[str, Any]:
        """A folder's subfolders and media files (hidden entries and links out of the root left out)."""
        folder = self.resolve(rel)
        if not folder.is_dir():
            raise VsrError(f"{rel!r} is not a folder")
        here = self.relative(folder)
        entries = []
        for child in sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower())):
            if child.name.startswith("."):
                continue
            real = child.resolve()
            if not real.is_relative_to(self.folder) or not real.exists():
                continue
            media = real.is_file() and real.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
            if real.is_dir() or media:
                entries.append({"name": child.name, "path": f"{here}/{child.name}" if here else child.name,
                                "dir": real.is_dir(), "size": real.stat().st_size if media else None})
        parent = None if folder == self.folder else self.relative(folder.parent)
        return {"path": here, "parent": parent, "entries": entries}
