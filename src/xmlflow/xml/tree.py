"""One element subtree → xmltodict-shaped Python values, with the cleaning rules.

This is the hot loop of every conversion (one call per element of the document),
so it is written for speed: one recursive method, names cached per tag, the path
tracked only when a path option needs it, no per-element allocation beyond the
result. The shapes are xmltodict's (``process_namespaces=False``):

>>> from lxml import etree
>>> from xmlflow.xml.options import ConvertOptions
>>> TreeConverter(ConvertOptions()).convert(etree.fromstring('<a x="1">t<b/><b>2</b></a>'))
{'@x': '1', 'b': '2', '#text': 't'}

(the empty ``<b/>`` is dropped by the default cleaning; with ``drop_empty=False``
it becomes ``None`` and ``b`` a list, as in xmltodict).
"""

from __future__ import annotations

import math
import re
from typing import Any

from lxml import etree

from xmlflow.errors import XmlError
from xmlflow.xml.options import ConvertOptions
from xmlflow.xml.parser import MAX_ATTRIBUTES

__all__ = ["DROP", "TreeConverter", "coerce"]

DROP: Any = object()
"""Returned for an element that cleaning removes (empty, or listed in ``drop``)."""

XML_NS = "{http://www.w3.org/XML/1998/namespace}"
_WS = re.compile(r"\s+")
_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+([eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)")


_FEW_ATTRIBUTES = 32
_ALL_ATTRIBUTES = etree.XPath("@*", smart_strings=True)


def _many(el: Any) -> list[tuple[str, str]]:
    """Attributes in O(n): lxml's ``items()`` looks each value up by name, O(n²), and
    spends seconds on an element with 20,000 attributes; XPath reads the nodes."""
    return [(value.attrname, str(value)) for value in _ALL_ATTRIBUTES(el)]


def coerce(text: str) -> Any:
    """``"42"`` → 42, ``"4.2"`` → 4.2, ``"true"`` → True; anything else unchanged.

    Leading zeros (``"007"``, zip codes, ids), integers beyond 18 digits and overflowing
    floats stay strings on purpose: coercion must not lose information.
    """
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        return number if math.isfinite(number) else text  # "1e999" stays a string
    return text


class TreeConverter:
    """Converts element subtrees with one set of options; counts elements converted."""

    def __init__(self, options: ConvertOptions) -> None:
        self.o = options
        self.elements = 0
        self.has_namespaces = False
        """Set by the driver once a namespace declaration was seen (slow path on)."""
        self._names: dict[Any, str] = {}
        self._attr_prefix = options.attr_prefix
        self._text_key = options.text_key
        self._track = options.needs_paths
        self._plain_text = not (options.collapse_whitespace or options.coerce_types)
        self._special = bool(
            options.drop or options.rename or options.rename_paths or options.force_list
        )
        self._fast = self._plain_text and not (self._special or self._track)
        """Default-like options: the inlined paths apply (unless namespaces appear)."""

    # -- names -----------------------------------------------------------------

    def name(self, el: Any) -> str:
        """The key for ``el``: ``prefix:local`` as written, stripped or mapped."""
        tag = el.tag
        key = tag if tag[0] != "{" else (tag, el.prefix)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = self._qualify(tag, el.prefix)
        return name

    def _qualify(self, tag: str, prefix: str | None) -> str:
        if tag[0] != "{":
            return tag
        uri, _, local = tag[1:].partition("}")
        ns = self.o.namespaces
        if ns == "strip":
            return local
        if ns == "keep":
            return f"{prefix}:{local}" if prefix else local
        short = ns.get(uri, uri)
        return f"{short}:{local}" if short else local

    def _attr_name(self, key: str, el: Any) -> str:
        if key[0] != "{":
            return self._attr_prefix + key
        if key.startswith(XML_NS):
            return f"{self._attr_prefix}xml:{key[len(XML_NS) :]}"
        uri, _, local = key[1:].partition("}")
        prefix = next((p for p, u in el.nsmap.items() if u == uri and p), None)
        return self._attr_prefix + self._qualify(key, prefix)

    # -- values ----------------------------------------------------------------

    def attributes(
        self, el: Any, attrib: Any, parent_nsmap: dict[str | None, str] | None
    ) -> dict[str, Any]:
        """Attributes (and, as xmltodict shows them, ``xmlns`` declarations) of ``el``."""
        count = len(attrib)
        if count > MAX_ATTRIBUTES:
            raise XmlError(
                f"more than {MAX_ATTRIBUTES} attributes on one element",
                line=el.sourceline or 1,
                column=1,
            )
        item: dict[str, Any] = {}
        if self.has_namespaces and self.o.namespaces == "keep":
            self._declarations(el, parent_nsmap, item)
        prefix, coerce_types = self._attr_prefix, self.o.coerce_types
        for key, value in attrib.items() if count <= _FEW_ATTRIBUTES else _many(el):
            name = prefix + key if key[0] != "{" else self._attr_name(key, el)
            item[name] = coerce(value) if coerce_types else value
        return item

    def _declarations(
        self, el: Any, parent_nsmap: dict[str | None, str] | None, item: dict[str, Any]
    ) -> None:
        inherited = parent_nsmap or {}
        for prefix, uri in el.nsmap.items():
            if inherited.get(prefix) != uri:
                key = f"xmlns:{prefix}" if prefix else "xmlns"
                item[self._attr_prefix + key] = uri

    def convert(
        self,
        el: Any,
        path: tuple[str, ...] | None = None,
        parent_nsmap: dict[str | None, str] | None = None,
    ) -> Any:
        """The value of ``el`` (``DROP`` if cleaning removes it).

        ``path`` is ``el``'s path from the root, needed only when ``needs_paths``;
        ``parent_nsmap`` only when the document declares namespaces.
        """
        self.elements += 1
        fast = self._fast and not self.has_namespaces
        keys = el.keys()
        if fast and keys and len(keys) <= _FEW_ATTRIBUTES and "{" not in "".join(keys):
            prefix = self._attr_prefix  # the common case, without a call
            item: dict[str, Any] | None = {prefix + k: v for k, v in el.items()}
        elif keys or self.has_namespaces:
            item = self.attributes(el, el.attrib, parent_nsmap)
        else:
            item = None
        if not len(el):
            text = el.text
        elif fast:
            item, text = self._plain_children(el, item or {})
        else:
            item, text = self._children(el, item or {}, path)
        if not fast:
            return self.finish_value(item or None, text)
        # finish_value() inlined for the default options: one call less per element
        if text and self.o.strip_text:
            text = text.strip()
        if not text:
            return item or (DROP if self.o.drop_empty else None)
        if item:
            item[self._text_key] = text
            return item
        return text

    def _children(
        self, el: Any, item: dict[str, Any], path: tuple[str, ...] | None
    ) -> tuple[dict[str, Any], str | None]:
        """Add ``el``'s children to ``item``; return it with ``el``'s joined text."""
        text = el.text
        parts = [text] if text else []
        nsmap = el.nsmap if self.has_namespaces else None
        for child in el:
            tail = child.tail
            if tail:
                parts.append(tail)
            if type(child.tag) is not str:
                self.other_node(child, item)
                continue
            name = self.name(child)
            child_path = (*path, name) if self._track and path is not None else None
            if self.o.drop.matches(name, child_path):
                continue
            value = self.convert(child, child_path, nsmap)
            if value is not DROP:
                forced = self.o.force_list.matches(name, child_path)
                _push(item, self.renamed(name, child_path), value, forced)
        return item, "".join(parts) if parts else None

    def _plain_children(self, el: Any, item: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """:meth:`_children` for the default options: the hot loop of every conversion.

        Plain leaves (no attributes, no children: most elements) are handled inline,
        without a recursive call or a path; this loop is where the time goes, so it
        trades a little repetition for about a third of the conversion's cost.
        """
        text = el.text
        parts = [text] if text else []
        names, name_of, convert = self._names, self.name, self.convert
        strip, drop_empty = self.o.strip_text, self.o.drop_empty
        leaves = 0
        for child in el:
            tail = child.tail
            if tail:
                parts.append(tail)
            tag = child.tag
            if type(tag) is not str:
                self.other_node(child, item)
                continue
            name = names.get(tag) or name_of(child)
            if not len(child) and not child.keys():  # keys(): the cheapest attribute test
                leaves += 1
                value = child.text
                if value and strip:
                    value = value.strip()
                if not value:
                    if drop_empty:
                        continue
                    value = None
            else:
                value = convert(child)
                if value is DROP:
                    continue
            if name in item:
                old = item[name]
                if type(old) is list:
                    old.append(value)
                else:
                    item[name] = [old, value]
            else:
                item[name] = value
        self.elements += leaves
        return item, "".join(parts) if parts else None

    def finish_value(self, item: dict[str, Any] | None, text: str | None) -> Any:
        o = self.o
        if text:
            if o.collapse_whitespace:
                text = _WS.sub(" ", text).strip()
            elif o.strip_text:
                text = text.strip()
        if not text:
            if item is None:
                return DROP if o.drop_empty else None
            return item
        value = coerce(text) if o.coerce_types else text
        if item is None:
            return value
        item[self._text_key] = value
        return item

    def other_node(self, node: Any, item: dict[str, Any]) -> None:
        """Comments and processing instructions, when the options keep them."""
        if isinstance(node, etree._Comment) and not self.o.drop_comments:
            _push(item, "#comment", (node.text or "").strip())
        elif isinstance(node, etree._ProcessingInstruction) and not self.o.drop_pis:
            _push(item, f"?{node.target}", (node.text or "").strip())

    def renamed(self, name: str, path: tuple[str, ...] | None) -> str:
        """The output key for an element named ``name`` at ``path`` (option ``rename``)."""
        if path is not None and path in self.o.rename_paths:
            return self.o.rename_paths[path]
        return self.o.rename.get(name, name)


def _push(item: dict[str, Any], key: str, value: Any, forced: bool = False) -> None:
    """xmltodict's rule: a second value under a key turns it into a list."""
    if key in item:
        old = item[key]
        if type(old) is list:
            old.append(value)
        else:
            item[key] = [old, value]
    else:
        item[key] = [value] if forced else value
