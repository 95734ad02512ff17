"""Conversion options: parsed once from a step's ``options`` dict, then read-only.

Every option is checked here so that a typo in ``config.py`` fails with the key's
name, not halfway through a 1 GB upload. Defaults give exactly what
``json.dumps(xmltodict.parse(doc))`` gives (``@attr``, ``#text``, names and ``xmlns``
declarations as written, empty elements as ``null``, text stripped, comments dropped);
the other options are xmltodict's parse options under their xmlflow names, plus
xmlflow's own cleaning (``drop_empty``, ``collapse_whitespace``, ``coerce_types``, ...).

Paths (``force_list``, ``drop``, ``rename``, ``record_path``) are element names
separated by ``/`` from the root, e.g. ``catalog/book``; a leading ``/`` is allowed.
A bare name without ``/`` matches that element anywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, cast

from xmlflow.errors import ConfigError, StepLoadError

__all__ = ["ConvertOptions", "PathSet", "split_path"]

Mode = Literal["json", "jsonl", "split"]
_MODES = ("json", "jsonl", "split")
_BOOL_KEYS = (
    "coerce_types",
    "strip_text",
    "collapse_whitespace",
    "drop_empty",
    "drop_comments",
    "drop_pis",
    "xml_attribs",
    "disable_entities",
)
Postprocessor = Callable[[list[tuple[str, Any]], str, Any], Any]


def split_path(path: str) -> tuple[str, ...]:
    """``"/a/b"`` → ``("a", "b")``; empty steps are refused by the caller."""
    return tuple(part for part in path.strip().strip("/").split("/"))


@dataclass(frozen=True)
class PathSet:
    """Names that match anywhere plus absolute paths; cheap to test per element."""

    names: frozenset[str] = frozenset()
    paths: frozenset[tuple[str, ...]] = frozenset()

    @classmethod
    def parse(cls, key: str, items: Iterable[str]) -> PathSet:
        names: set[str] = set()
        paths: set[tuple[str, ...]] = set()
        for item in items:
            parts = split_path(item)
            if not item.strip() or any(not p for p in parts):
                raise ConfigError(f"option {key!r}: {item!r} is not an element name or path")
            if len(parts) == 1 and "/" not in item:
                names.add(parts[0])
            else:
                paths.add(parts)
        return cls(frozenset(names), frozenset(paths))

    def __bool__(self) -> bool:
        return bool(self.names or self.paths)

    def matches(self, name: str, path: tuple[str, ...] | None) -> bool:
        return name in self.names or (path is not None and path in self.paths)


@dataclass(frozen=True)
class ConvertOptions:
    """How one XML document becomes JSON. Build it with :meth:`from_dict`."""

    mode: Mode = "json"
    record_path: tuple[str, ...] | None = None
    force_list: PathSet = field(default_factory=PathSet)
    attr_prefix: str = "@"
    text_key: str = "#text"
    namespaces: Literal["keep", "strip"] | Mapping[str, str | None] = "keep"
    coerce_types: bool = False
    strip_text: bool = True
    collapse_whitespace: bool = False
    drop_empty: bool = False
    drop_comments: bool = True
    drop_pis: bool = True
    drop: PathSet = field(default_factory=PathSet)
    rename: Mapping[str, str] = field(default_factory=dict)
    rename_paths: Mapping[tuple[str, ...], str] = field(default_factory=dict)
    xml_attribs: bool = True
    force_cdata: PathSet | bool = False
    cdata_separator: str = ""
    disable_entities: bool = False
    postprocessor: Postprocessor | None = None
    """xmltodict's ``postprocessor(path, key, value)``, loaded from the user's
    ``processing_steps/`` folder (``config.py`` only: an upload never names code)."""

    @property
    def needs_paths(self) -> bool:
        """Whether the converter must track each element's path (costs a little)."""
        return bool(
            self.force_list.paths
            or self.drop.paths
            or self.rename_paths
            or (isinstance(self.force_cdata, PathSet) and self.force_cdata.paths)
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, base_dir: Path | None = None) -> ConvertOptions:
        """Validate a step's options; raise :class:`ConfigError` naming the bad key.

        ``base_dir`` resolves a relative ``force_list_xsd`` and the ``postprocessor``'s
        step file (the step passes its ``config_dir``).
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"options must be a dict, not {type(d).__name__}")
        _reject_unknown(d)
        kwargs: dict[str, Any] = {}
        for key in _BOOL_KEYS:
            if key in d:
                kwargs[key] = _bool(key, d[key])
        kwargs.update(_strings(d))
        kwargs.update(_paths(d, base_dir))
        if "namespaces" in d:
            kwargs["namespaces"] = _namespaces(d["namespaces"])
        if d.get("postprocessor") is not None:
            kwargs["postprocessor"] = load_postprocessor(d["postprocessor"], base_dir)
        return cls(**kwargs)


_KNOWN = {f.name for f in fields(ConvertOptions)} - {"rename_paths"} | {"force_list_xsd"}


def _reject_unknown(d: Mapping[str, Any]) -> None:
    for key in d:
        if key not in _KNOWN:
            close = difflib.get_close_matches(str(key), sorted(_KNOWN), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown option {key!r}{hint}; known options: {', '.join(sorted(_KNOWN))}"
            )


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"option {key!r} must be true or false, not {value!r}")
    return value


def _string(key: str, value: Any, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        raise ConfigError(f"option {key!r} must be a non-empty string, not {value!r}")
    return value


def _string_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"option {key!r} must be a list of element names or paths")
    return list(value)


def _strings(d: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "mode" in d:
        if d["mode"] not in _MODES:
            raise ConfigError(
                f"option 'mode' must be one of {', '.join(_MODES)}, not {d['mode']!r}"
            )
        out["mode"] = d["mode"]
    if "attr_prefix" in d:
        out["attr_prefix"] = _string("attr_prefix", d["attr_prefix"], empty_ok=True)
    if "text_key" in d:
        out["text_key"] = _string("text_key", d["text_key"])
    if "cdata_separator" in d:
        out["cdata_separator"] = _string("cdata_separator", d["cdata_separator"], empty_ok=True)
    if out.get("attr_prefix", "@") == "" and out.get("text_key", "#text") == "":
        raise ConfigError("options 'attr_prefix' and 'text_key' cannot both be empty")
    return out


def _paths(d: Mapping[str, Any], base_dir: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if d.get("record_path") is not None:
        parts = split_path(_string("record_path", d["record_path"]))
        if not all(parts):
            raise ConfigError(f"option 'record_path': {d['record_path']!r} is not a path")
        out["record_path"] = parts
    forced = _string_list("force_list", d.get("force_list", []))
    if d.get("force_list_xsd") is not None:
        from xmlflow.xml.schema import repeated_elements

        xsd = Path(_string("force_list_xsd", d["force_list_xsd"]))
        forced += sorted(repeated_elements(xsd if base_dir is None else base_dir / xsd))
    out["force_list"] = PathSet.parse("force_list", forced)
    if "drop" in d:
        out["drop"] = PathSet.parse("drop", _string_list("drop", d["drop"]))
    if isinstance(d.get("force_cdata"), bool):
        out["force_cdata"] = d["force_cdata"]
    elif "force_cdata" in d:
        out["force_cdata"] = PathSet.parse(
            "force_cdata", _string_list("force_cdata", d["force_cdata"])
        )
    if "rename" in d:
        out["rename"], out["rename_paths"] = _rename(d["rename"])
    return out


def _rename(value: Any) -> tuple[dict[str, str], dict[tuple[str, ...], str]]:
    if not isinstance(value, Mapping):
        raise ConfigError("option 'rename' must be a dict of {name or path: new name}")
    names: dict[str, str] = {}
    paths: dict[tuple[str, ...], str] = {}
    for key, new in value.items():
        _string(f"rename[{key!r}]", new)
        parts = split_path(_string("rename", key))
        if not all(parts):
            raise ConfigError(f"option 'rename': {key!r} is not an element name or path")
        if "/" in key:
            paths[parts] = new
        else:
            names[key] = new
    return names, paths


def _namespaces(value: Any) -> Literal["keep", "strip"] | dict[str, str | None]:
    if value in ("keep", "strip"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in value.items()
    ):
        return dict(value)
    raise ConfigError(
        "option 'namespaces' must be 'keep', 'strip' or a dict"
        " {namespace URI: short prefix, or None to drop it}"
    )


def load_postprocessor(value: Any, base_dir: Path | None) -> Postprocessor:
    """``"module:function"`` (or ``"module.function"``) from ``processing_steps/module.py``.

    Only a file of the user's own steps folder can be named, never an installed module:
    the option comes from ``config.py``, and the upload-options allowlist never admits it.
    """
    text = _string("postprocessor", value)
    module, sep, func = text.rpartition(":") if ":" in text else text.rpartition(".")
    if not sep or not module.isidentifier() or not func.isidentifier():
        raise ConfigError(f"option 'postprocessor': {text!r} is not 'module:function'")
    if base_dir is None:
        raise ConfigError("option 'postprocessor' needs a config.py folder (processing_steps/)")
    from xmlflow.models import StepSpec
    from xmlflow.pipeline import load_step, step_file

    steps_dir = base_dir / "processing_steps"
    spec = StepSpec(id=module, name="postprocessor", module=func)
    if step_file(spec, steps_dir) is None:
        raise ConfigError(f"option 'postprocessor': no step file {steps_dir / module}.py")
    try:
        fn = load_step(spec, steps_dir)
    except StepLoadError as exc:
        raise ConfigError(f"option 'postprocessor': {exc.message}") from exc
    return cast(Postprocessor, fn)
