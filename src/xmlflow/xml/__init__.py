"""XML → JSON for xmlflow: hardened parsing, streaming conversion, cleaning rules.

Pure library code: no Flask, no storage. The public API is three names::

    from xmlflow.xml import convert_file, ConvertOptions, ConvertStats

    options = ConvertOptions.from_dict({"mode": "jsonl", "record_path": "catalog/book"})
    with open("books.jsonl", "wb") as out:
        stats = convert_file(Path("books.xml"), out, options)
"""

from xmlflow.xml.convert import ConvertStats, convert_file
from xmlflow.xml.options import ConvertOptions

__all__ = ["ConvertOptions", "ConvertStats", "convert_file"]
