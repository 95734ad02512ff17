"""Namespace declarations cost linear time (issue 10, item 5).

0.1 rebuilt the namespace map for every element once a declaration was seen: N
declarations on the root and N records took O(N²) (318 KB: 30 s). The bound here is
generous and relative, measured in CPU time on small documents, best of three: ten
times the declarations and records must cost less than 30 times as much (quadratic
would be 100 times). Output equality with xmltodict is checked on the same documents.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import xmltodict

from xmlflow.xml import ConvertOptions, convert_file


def declarations_and_records(n: int, *, on_attributes: bool = False) -> bytes:
    """``n`` prefixes declared on the root, ``n`` records each using one of them."""
    decls = " ".join(f'xmlns:p{i}="urn:example:{i}"' for i in range(n))
    if on_attributes:
        records = "".join(f'<rec p{i}:a="{i}" p{i}:b="x">v</rec>' for i in range(n))
    else:
        records = "".join(f"<p{i}:rec><p{i}:v>{i}</p{i}:v></p{i}:rec>" for i in range(n))
    return f"<root {decls}>{records}</root>".encode()


def cpu_seconds(tmp_path: Path, data: bytes, options: dict[str, object]) -> float:
    src = tmp_path / f"ns-{len(data)}.xml"
    src.write_bytes(data)
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        convert_file(src, io.BytesIO(), ConvertOptions.from_dict(options))
        best = min(best, time.process_time() - start)
    return max(best, 1e-4)


@pytest.mark.parametrize("on_attributes", [False, True], ids=["elements", "attributes"])
@pytest.mark.parametrize("options", [{}, {"namespaces": {}}], ids=["as-written", "processed"])
def test_cost_is_linear_in_declarations(
    tmp_path: Path, on_attributes: bool, options: dict[str, object]
) -> None:
    small = cpu_seconds(
        tmp_path, declarations_and_records(500, on_attributes=on_attributes), options
    )
    large = cpu_seconds(
        tmp_path, declarations_and_records(5000, on_attributes=on_attributes), options
    )
    assert large < 30 * small, f"500 declarations: {small:.4f} s, 5000: {large:.4f} s"


@pytest.mark.parametrize("on_attributes", [False, True], ids=["elements", "attributes"])
def test_many_declarations_convert_as_xmltodict_does(tmp_path: Path, on_attributes: bool) -> None:
    data = declarations_and_records(300, on_attributes=on_attributes)
    src = tmp_path / "ns.xml"
    src.write_bytes(data)
    out = io.BytesIO()
    convert_file(src, out, ConvertOptions())
    assert json.dumps(json.loads(out.getvalue())) == json.dumps(xmltodict.parse(data))
