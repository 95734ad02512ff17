"""Both conversion paths and xmltodict side by side, for the native tests."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import xmltodict

from xmlflow.errors import XmlError
from xmlflow.xml import native
from xmlflow.xml.convert import convert_file as python_convert_file
from xmlflow.xml.options import ConvertOptions

needs_native = pytest.mark.skipif(
    native.native_module() is None and os.environ.get("CI") != "true",
    reason="the native XML core is not built here (pip install -e . with gcc and expat.h)",
)
XMLTODICT_LIKE = {"drop_empty": False}


def run_native(path: Path, **options: Any) -> bytes:
    """The C core's output; fails the test if the options would fall back."""
    o = ConvertOptions.from_dict(options)
    assert native.unsupported(o) is None, native.unsupported(o)
    module = native.native_module()
    assert module is not None, "native core not importable"
    out = io.BytesIO()
    native._NativeRun(module, path, out, o).run(None, None)
    return out.getvalue()


def run_python(path: Path, **options: Any) -> bytes:
    out = io.BytesIO()
    python_convert_file(path, out, ConvertOptions.from_dict(options))
    return out.getvalue()


def outcome(run: Any, path: Path, **options: Any) -> tuple[str, bytes | str]:
    """``("ok", output)`` or ``("error", message)``."""
    try:
        return "ok", run(path, **options)
    except XmlError as exc:
        return "error", exc.message


def xmltodict_json(data: bytes, **kwargs: Any) -> bytes:
    """``xmltodict.parse`` dumped compactly as the converters write (UTF-8, no spaces)."""
    value = xmltodict.parse(data, disable_entities=False, **kwargs)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def xmltodict_outcome(data: bytes, **kwargs: Any) -> tuple[str, bytes | None]:
    try:
        return "ok", xmltodict_json(data, **kwargs)
    except Exception:  # expat's ExpatError, or ValueError from xmltodict
        return "error", None
