"""Output previews: time and memory of one preview page against reading the output whole.

Generates a JSON Lines, a one-document JSON, a split zip and a text output of about
``--size-mb`` each (under ``bench/out/``, git-ignored), then, each in its own
subprocess (so peak RSS, VmHWM, is its own), times the first page, a page from the
middle of the file (a cursor past half of it) and, as the baseline, reading the whole
output through in 1 MiB chunks, which is what a download costs the server at the least
(parsing it, as a client without previews must, costs far more). One table with ms,
peak RSS and ratios.

    .venv/bin/python bench/preview.py --size-mb 1024
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
ROW = '{"n": %d, "name": "record %d", "tags": ["a", "b"], "pad": "%s"}'


def generate(size_mb: int) -> dict[str, Path]:
    """The four outputs, made once per size (reused by later runs)."""
    from xmlflow.xml.zipwriter import ZipWriter

    OUT.mkdir(exist_ok=True)
    rows = size_mb * 1024 * 1024 // 100
    paths = {k: OUT / f"preview-{size_mb}mb.{k}" for k in ("jsonl", "json", "zip", "txt")}
    if all(p.exists() for p in paths.values()):
        return paths
    chunk = [ROW % (i, i, "x" * 40) for i in range(10_000)]
    with paths["jsonl"].open("w") as f:
        for _ in range(rows // 10_000):
            f.write("\n".join(chunk) + "\n")
    with paths["json"].open("w") as f:
        f.write('{"root": {"@id": "bench", "row": [')
        for i in range(rows // 10_000):
            f.write(("," if i else "") + ",".join(chunk))
        f.write("]}}")
    with paths["txt"].open("w") as f:
        for _ in range(rows // 10_000):
            f.write("\n".join(chunk) + "\n")
    with paths["zip"].open("wb") as f:
        archive = ZipWriter(f)
        for i in range(rows // 10):  # bigger members: fewer of them, as split writes
            archive.add(f"{i:06d}-row.json", ("[" + ",".join(chunk[:9]) + "]").encode())
        archive.close()
    return paths


def measure(kind: str, path: str, how: str) -> dict[str, float]:
    """In a child process: one operation, its wall time and the process's peak RSS."""
    from xmlflow.web.preview import PREVIEWERS, _parse_cursor

    file = Path(path)
    size = file.stat().st_size
    start = time.perf_counter()
    if how == "first page":
        page = PREVIEWERS[kind](file, size, None, 20, 256 * 1024)
        assert page.items or page.lines
    elif how == "middle page":
        cursor = _middle_cursor(kind, file, size)
        page = PREVIEWERS[kind](file, size, _parse_cursor(cursor, kind, size), 20, 256 * 1024)
        assert page.items or page.lines
    else:  # the whole read read through, as a download serves it (1 MiB chunks)
        with file.open("rb") as f:
            while f.read(1 << 20):
                pass
    took = time.perf_counter() - start
    status = Path("/proc/self/status").read_text()
    peak = int(next(x.split()[1] for x in status.splitlines() if x.startswith("VmHWM")))
    return {"ms": took * 1000, "peak_mb": peak / 1024}


def _middle_cursor(kind: str, file: Path, size: int) -> str:
    """A cursor at a record boundary just past the middle (as a client would hold one)."""
    with file.open("rb") as f:
        f.seek(size // 2)
        data = f.read(1 << 16)
    if kind == "zip":
        at = data.find(b"PK\x03\x04")
        return f"{size // 2 + at}:0"
    if kind == "json":
        at = data.find(b"},{") + 1
        return f"a{size // 2 + at}:0"
    at = data.find(b"\n") + 1
    return f"{size // 2 + at}:0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=256)
    args = parser.parse_args()
    paths = generate(args.size_mb)
    kinds = {"jsonl": "jsonl", "json": "json", "zip": "zip", "txt": "text"}
    print(f"outputs of ~{args.size_mb} MB; window 256 KiB, 20 records a page")
    print(f"{'output':8} {'operation':14} {'ms':>10} {'peak MB':>9} {'× whole (time)':>15}")
    for ext, kind in kinds.items():
        results = {}
        for how in ("whole read", "first page", "middle page"):
            code = (
                "import json, sys; sys.path.insert(0, 'bench'); from preview import measure;"
                f"print(json.dumps(measure({kind!r}, {str(paths[ext])!r}, {how!r})))"
            )
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            )
            results[how] = json.loads(done.stdout)
        base = results["whole read"]["ms"]
        for how, r in results.items():
            ratio = r["ms"] / base if base else float("nan")
            print(f"{ext:8} {how:14} {r['ms']:10.1f} {r['peak_mb']:9.1f} {ratio:15.5f}")


if __name__ == "__main__":
    main()
