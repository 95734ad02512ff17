"""XML → JSON for xmlflow: hardened parsing, streaming conversion, cleaning rules.

Pure library code: no Flask, no storage. The public API is three names::

    from xmlflow.xml import convert_file, ConvertOptions, ConvertStats

    options = ConvertOptions.from_dict({"mode": "jsonl", "record_path": "catalog/book"})
    with open("books.jsonl", "wb") as out:
        stats = convert_file(Path("books.xml"), out, options)

``convert_file`` (the Python converter) is imported on first use: the native path
(``xmlflow.xml.native``) never needs it, nor lxml, which keeps start-up short.
"""

from typing import TYPE_CHECKING, Any

from xmlflow.xml.options import ConvertOptions
from xmlflow.xml.stats import ConvertStats

if TYPE_CHECKING:
    from xmlflow.xml.convert import convert_file

__all__ = ["ConvertOptions", "ConvertStats", "convert_file"]


def __getattr__(name: str) -> Any:
    if name == "convert_file":
        from xmlflow.xml.convert import convert_file

        return convert_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
