"""The native core as users run it: ``bench/xml_throughput.py`` on 50 MB records and chapters.

The table, its contenders and how they are measured are ``xml_throughput.py``'s (one
table, side by side in one run: the lxml floor, xmltodict, ``xmlflow run`` native in
each mode and on the Python path, the step alone); this only changes the defaults.

    .venv/bin/python bench/native_throughput.py --size-mb 50
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from xml_throughput import main  # noqa: E402

if __name__ == "__main__":
    main(size_mb=50, shapes="records,document")
