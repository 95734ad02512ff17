"""XML Schema files that *operators* provide (never uploads): loading and reading them.

Schemas come from the deployment's config folder, yet an ``xs:import`` can still name
``http://...`` or ``../../etc/...``. :func:`load_schema` therefore reads imports and
includes only from files inside the schema's own folder and fetches nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lxml import etree

from xmlflow.errors import ConfigError
from xmlflow.xml.parser import safe_parser

__all__ = ["LocalFilesOnly", "load_schema", "local_parser", "repeated_elements"]

log = logging.getLogger(__name__)
XS = "{http://www.w3.org/2001/XMLSchema}"


class LocalFilesOnly(etree.Resolver):
    """Resolve only files under ``folder``; remember (and empty) everything else."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder.resolve()
        self.refused: list[str] = []

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        target = _local_path(system_url or "")
        if target is not None and target.is_relative_to(self.folder) and target.is_file():
            return self.resolve_filename(str(target), context)
        self.refused.append(system_url or "")
        return self.resolve_string("", context)


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme == "" and url:
        return Path(url).resolve()
    return None


def local_parser(folder: Path) -> tuple[etree.XMLParser, LocalFilesOnly]:
    """A parser for operator files (XSD, XSLT) that reads only files under ``folder``."""
    resolver = LocalFilesOnly(folder)
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    parser.resolvers.add(resolver)
    return parser, resolver


def load_schema(path: Path) -> etree.XMLSchema:
    """Compile the XSD at ``path``; imports/includes only from its folder, never the network."""
    if not path.is_file():
        raise ConfigError(f"schema file not found: {path}")
    parser, resolver = local_parser(path.parent)
    try:
        doc = etree.parse(str(path), parser)
        return etree.XMLSchema(doc)
    except (etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
        refused = f" (not loaded: {', '.join(resolver.refused)})" if resolver.refused else ""
        raise ConfigError(f"cannot use schema {path.name}: {exc}{refused}") from None


def repeated_elements(path: Path) -> set[str]:
    """Names of ``xs:element`` declarations that may repeat (for ``force_list``).

    Only the named file is read (not its imports): names are enough to force lists.
    """
    if not path.is_file():
        raise ConfigError(f"option 'force_list_xsd': schema file not found: {path}")
    try:
        with open(path, "rb") as f:
            doc = etree.parse(f, safe_parser())
    except etree.XMLSyntaxError as exc:
        raise ConfigError(f"option 'force_list_xsd': {path.name} is not XML: {exc}") from None
    names: set[str] = set()
    for el in doc.iter(f"{XS}element"):
        name = el.get("name") or (el.get("ref") or "").rpartition(":")[2]
        if name and _repeats(el):
            names.add(name)
    return names


def _repeats(el: Any) -> bool:
    """``maxOccurs`` > 1 on the element or on a sequence/choice around it."""
    node = el
    while node is not None and node.tag not in (f"{XS}complexType", f"{XS}schema"):
        if node.get("maxOccurs", "1") not in ("0", "1"):
            return True
        node = node.getparent()
    return False
