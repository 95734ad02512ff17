"""Inputs as users have them: gzip, bzip2 and xz documents read while decompressing, zips opened.

Public XML dumps ship compressed (PubMed ``.xml.gz``, Wikipedia ``.xml.bz2``, zips of
filings). A compressed upload is kept compressed as the job's source: every reader of
the source opens it with :func:`open_input`, which recognises the format by its magic
bytes (never by the name) and returns a file object that decompresses as it is read.
No decompressed copy is ever written, and memory stays that of one chunk.

Decompression is where a small upload becomes a large one, so it is capped
(:class:`Limits`): a document may expand at most ``XMLFLOW_MAX_EXPANSION_RATIO`` times
its compressed size (at least :data:`RATIO_FLOOR` bytes, so a tiny file always fits)
and never beyond ``XMLFLOW_MAX_DECOMPRESSED_MB``. Reading past the cap raises
:class:`~xmlflow.errors.ExpansionLimit` naming the file and the cap, at the chunk
that crossed it: a gzip bomb fails after a few MB, not after filling the disk.

A zip is a folder, not a document: the upload path turns each XML member into a job
of its own (:func:`extract_zip`), each member extracted through the same caps.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from .errors import BadRequest, DamagedInput, ExpansionLimit, UploadTooLarge

CHUNK = 256 * 1024
RATIO_FLOOR = 1024 * 1024
"""Bytes any compressed document may expand to whatever its ratio: headers of a tiny
file alone can exceed a ratio."""
PROBE_BYTES = 4 * 1024 * 1024
"""Decompressed bytes an upload is read to at once: a bomb is refused before it is a job."""

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip
)
_OPENERS: dict[str, Callable[[IO[bytes]], io.BufferedIOBase]] = {
    "gzip": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    "bzip2": lambda raw: bz2.BZ2File(raw, mode="rb"),
    "xz": lambda raw: lzma.LZMAFile(raw, mode="rb"),
}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
_DAMAGE = (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError)


def sniff_format(head: bytes) -> str | None:
    """``gzip``, ``bzip2``, ``xz`` or ``zip`` from the first bytes of a file; None for others."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind if kind != "bzip2" or head[3:4].isdigit() else None
    return None


def inner_name(name: str) -> str:
    """The document's own name inside a compressed file's: ``x.xml.gz`` -> ``x.xml``."""
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} kB"


@dataclass(frozen=True)
class Limits:
    """How far a compressed input may expand (``XMLFLOW_MAX_EXPANSION_RATIO`` and
    ``XMLFLOW_MAX_DECOMPRESSED_MB``); picklable, so a job's process gets them."""

    ratio: float = 200.0
    max_bytes: int = 10 * 1024 * 1024 * 1024

    def cap(self, compressed_size: int) -> int:
        """The decompressed bytes allowed for a document of ``compressed_size`` bytes."""
        return int(min(self.max_bytes, max(self.ratio * compressed_size, RATIO_FLOOR)))

    def refusal(self, name: str, compressed_size: int) -> ExpansionLimit:
        """The error for ``name`` expanding past its cap: which cap, and the setting."""
        cap = self.cap(compressed_size)
        if cap >= self.max_bytes:
            why = f"the cap of {_mb(self.max_bytes)} (XMLFLOW_MAX_DECOMPRESSED_MB)"
        else:
            why = (
                f"the cap of {self.ratio:g} times its compressed size of {_mb(compressed_size)} "
                "(XMLFLOW_MAX_EXPANSION_RATIO)"
            )
        return ExpansionLimit(
            f"{name} expands to more than {_mb(cap)} when decompressed, over {why}",
            details={"file": name, "limit_bytes": cap, "ratio": self.ratio},
        )


_limits = Limits()
_names: dict[Path, str] = {}


def use_limits(limits: Limits, source: Path | None = None, name: str | None = None) -> None:
    """Set the caps :func:`open_input` applies in this process (a job's process, at start),
    and the name people know the job's ``source`` by (its file is called ``source``)."""
    global _limits
    _limits = limits
    if source is not None and name:
        _names[Path(source)] = name


class DecompressingReader(io.RawIOBase):
    """A compressed file read as the document inside it, capped, damage said plainly."""

    def __init__(self, raw: BinaryIO, kind: str, name: str, limits: Limits) -> None:
        super().__init__()
        self.raw = raw
        self.kind = kind
        self.name_shown = name
        self.limits = limits
        self.compressed_size = max(_size_of(raw), 1)
        self.cap = limits.cap(self.compressed_size)
        self.decompressed = 0
        self.inner = _OPENERS[kind](raw)

    @property
    def compressed_position(self) -> int:
        """Compressed bytes read so far: progress is measured against the file on disk."""
        return min(self.raw.tell(), self.compressed_size)

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Decompressed bytes read (``f.tell()`` means the document's position)."""
        return self.decompressed

    def read(self, size: int | None = -1) -> bytes:
        want = CHUNK if size is None or size < 0 else size
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(want), b""))
        try:
            data = self.inner.read(min(want, self.cap - self.decompressed + 1))
        except _DAMAGE as exc:
            raise self._damaged(exc) from None
        self.decompressed += len(data)
        if self.decompressed > self.cap:
            raise self.limits.refusal(self.name_shown, self.compressed_size)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.inner.close()
        self.raw.close()
        super().close()

    def _damaged(self, exc: BaseException) -> DamagedInput:
        reason = "it ends too early (truncated)" if isinstance(exc, EOFError) else str(exc)
        return DamagedInput(
            f"{self.name_shown} is not a readable {self.kind} file: {reason}",
            details={"file": self.name_shown, "format": self.kind},
        )


def _size_of(f: IO[bytes]) -> int:
    try:
        return os.fstat(f.fileno()).st_size
    except (OSError, io.UnsupportedOperation):
        return 0


def open_input(path: Path, *, name: str | None = None, limits: Limits | None = None) -> BinaryIO:
    """Open a job's source for reading: the document itself, decompressed if it is compressed.

    Every reader of a source goes through here; a zip is refused (the upload path opens
    zips, one job per member).
    """
    raw: BinaryIO = open(path, "rb")  # noqa: SIM115 - returned, the caller closes it
    try:
        head = raw.read(6)
        raw.seek(0)
        kind = sniff_format(head)
        shown = name or _names.get(Path(path)) or Path(path).name
        if kind == "zip":
            raise DamagedInput(
                f"{shown} is a zip archive, not a document: upload it (each XML member "
                "becomes a job of its own) or unpack it first",
                details={"file": shown, "format": "zip"},
            )
        if kind is None:
            return raw
        reader = DecompressingReader(raw, kind, shown, limits or _limits)
        return io.BufferedReader(reader, CHUNK)  # lines and small reads stay cheap
    except BaseException:
        raw.close()
        raise


def source_position(f: IO[bytes], consumed: int) -> int:
    """How far reading ``f`` stands in the file on disk: compressed bytes when compressed,
    so that progress against the source's size stays a true fraction."""
    raw = getattr(f, "raw", None)
    return raw.compressed_position if isinstance(raw, DecompressingReader) else consumed


def check_compressed(path: Path, name: str, limits: Limits) -> str | None:
    """At upload: the format of a compressed document, after reading its first
    :data:`PROBE_BYTES` decompressed (a bomb or a damaged small file is refused at once)."""
    with open(path, "rb") as f:
        kind = sniff_format(f.read(6))
    if kind not in _OPENERS:
        return kind
    with open_input(path, name=name, limits=limits) as reader:
        read = 0
        while read < PROBE_BYTES and (data := reader.read(CHUNK)):
            read += len(data)
            time.sleep(0)  # let other requests run between chunks (a greenlet under gevent)
    return kind


# -- zips: one job per XML member ---------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """An XML member of a zip, extracted to a file of its own."""

    path: Path
    name: str


def looks_like_xml(head: bytes) -> bool:
    """A document that starts like XML (BOM, whitespace, ``<``), or a compressed one."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<")):
        return True
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return text.startswith(b"<") or sniff_format(head) in _OPENERS


def _skipped_name(name: str) -> bool:
    """Folders, macOS resource forks and dot files: never documents people meant to send."""
    parts = name.replace("\\", "/").split("/")
    return name.endswith("/") or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def extract_zip(
    path: Path,
    zip_name: str,
    limits: Limits,
    max_members: int,
    new_file: Callable[[], tuple[Path, IO[bytes]]],
) -> list[Member]:
    """Each XML member of the zip at ``path`` written to a new file (from ``new_file``).

    All or nothing: on any error every file written so far is deleted. Members that are
    not XML (by their first bytes; nested archives are never opened) are skipped. How
    many there are is the caller's to check first (:func:`count_xml_members`): the
    limit is the upload's, which the zip shares with the other files sent with it.
    """
    members: list[Member] = []
    try:
        with _open_zip(path, zip_name) as archive:
            total = 0
            for info in _candidates(archive, zip_name, max_members):
                member = _extract_member(archive, info, zip_name, limits, new_file, total)
                if member is not None:
                    total += member.path.stat().st_size
                    members.append(member)
    except BaseException:
        for member in members:
            member.path.unlink(missing_ok=True)
        raise
    if not members:
        raise BadRequest(
            f"{zip_name} holds no XML document (members are recognised by their content; "
            "folders, dot files, __MACOSX/ and nested archives are skipped)",
            details={"file": zip_name},
        )
    return members


def count_xml_members(path: Path, zip_name: str, max_members: int) -> int:
    """How many members of the zip at ``path`` :func:`extract_zip` would take, told from
    their first bytes without writing any: so an upload (or ``xmlflow submit``, before
    sending) can say how many documents a zip is."""
    count = 0
    with _open_zip(path, zip_name) as archive:
        for info in _candidates(archive, zip_name, max_members):
            with _member_errors(f"{zip_name}: member {info.filename!r}", zip_name):
                with archive.open(info) as source:
                    count += looks_like_xml(source.read(64))
            time.sleep(0)  # in a request: let the others (streams) run between members
    return count


@contextlib.contextmanager
def _member_errors(shown: str, zip_name: str) -> Iterator[None]:
    """A member that cannot be read (damaged, encrypted, an unknown compression) as the
    refusal of its zip."""
    try:
        yield
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, *_DAMAGE) as exc:
        raise DamagedInput(f"{shown} cannot be read: {exc}", details={"file": zip_name}) from None


@contextlib.contextmanager
def _open_zip(path: Path, zip_name: str) -> Iterator[zipfile.ZipFile]:
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except zipfile.BadZipFile as exc:
        raise DamagedInput(
            f"{zip_name} is not a readable zip file: {exc}", details={"file": zip_name}
        ) from None


def _candidates(archive: zipfile.ZipFile, zip_name: str, max_members: int) -> list[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > 10 * max_members:
        raise UploadTooLarge(
            f"{zip_name} has {len(infos)} entries; at most {10 * max_members} are read "
            "(10 x XMLFLOW_MAX_UPLOAD_FILES)",
            details={"file": zip_name, "entries": len(infos)},
        )
    return [i for i in infos if not i.is_dir() and not _skipped_name(i.filename)]


def _extract_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    zip_name: str,
    limits: Limits,
    new_file: Callable[[], tuple[Path, IO[bytes]]],
    total_before: int,
) -> Member | None:
    """The member in a file of its own, or None when it is not XML; capped as it is read."""
    shown = f"{zip_name}: member {info.filename!r}"
    cap = min(limits.cap(info.compress_size), limits.max_bytes - total_before)
    if info.file_size > cap:
        raise _member_refusal(limits, shown, info, total_before)
    with _member_errors(shown, zip_name), archive.open(info) as source:
        head = source.read(64)
        if not looks_like_xml(head):
            return None
        path, out = new_file()
        try:
            with out:
                written = _copy_capped(source, out, head, cap)
                if written > cap:
                    raise _member_refusal(limits, shown, info, total_before)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    from .service import display_name  # local: the service imports this module

    return Member(path, display_name(info.filename))


def _copy_capped(source: IO[bytes], out: IO[bytes], head: bytes, cap: int) -> int:
    written = len(head)
    out.write(head)
    while written <= cap and (data := source.read(min(CHUNK, cap - written + 1))):
        written += len(data)
        out.write(data)
        time.sleep(0)  # in a request: let the others (streams) run between chunks
    return written


def _member_refusal(
    limits: Limits, shown: str, info: zipfile.ZipInfo, total_before: int
) -> ExpansionLimit:
    if limits.cap(info.compress_size) > limits.max_bytes - total_before:
        return ExpansionLimit(
            f"{shown} takes the zip's decompressed size past the cap of "
            f"{_mb(limits.max_bytes)} (XMLFLOW_MAX_DECOMPRESSED_MB)",
            details={"file": shown, "limit_bytes": limits.max_bytes},
        )
    return limits.refusal(shown, info.compress_size)
