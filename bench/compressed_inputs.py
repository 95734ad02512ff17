"""Compressed inputs: converting a .gz/.bz2/.xz costs time, never memory that grows with the file.

Generates ``--size-mb`` of records XML (the ``records`` shape of ``xml_throughput.py``)
under ``bench/out/``, compresses it with each format, and converts each file through
the ``process_xml`` step (jsonl) in a subprocess of its own, as a job runs it: the source
is read through :func:`xmlflow.inputs.open_input`, decompressed while streaming. Prints
compressed size, seconds, MB/s of XML, peak RSS (VmHWM) and both as ratios to the plain
file measured in the same run. A decompressing reader that held the document would
show a peak RSS growing with ``--size-mb``; run it at two sizes to see that it does not.

    .venv/bin/python bench/compressed_inputs.py --size-mb 100
    .venv/bin/python bench/compressed_inputs.py --size-mb 400 --formats gz
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import lzma
import subprocess
import sys
import time
from pathlib import Path

from xml_throughput import OUT, generate

COMPRESS = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}

CHILD = """
import json, sys, time
from pathlib import Path
from xmlflow.step import StepContext
from xmlflow.steps.process_xml import run_xml_processing_step
from xmlflow.inputs import Limits, use_limits

use_limits(Limits(ratio=1000, max_bytes=1 << 40))
src, work = Path(sys.argv[1]), Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
ctx = StepContext(job_id="bench", step_id="process_xml", input=src, workdir=work,
                  filename=src.name, options={"mode": "jsonl"})
started = time.perf_counter()
run_xml_processing_step(ctx)
took = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
for o in ctx.outputs:
    o.path.unlink()
print(json.dumps({"seconds": took, "rss_mib": hwm / 1024}))
"""


def compressed(plain: Path, fmt: str) -> Path:
    target = plain.with_name(f"{plain.name}.{fmt}")
    if not target.exists() or target.stat().st_mtime < plain.stat().st_mtime:
        with plain.open("rb") as src, COMPRESS[fmt](target, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
    return target


def measure(path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(OUT / "compressed-work")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--formats", default="gz,bz2,xz")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    plain = generate("records", args.size_mb)
    size = plain.stat().st_size
    rows = [("xml", plain)] + [(f, compressed(plain, f)) for f in args.formats.split(",")]
    print(f"{size / 1e6:.0f} MB of records XML, converted to JSON Lines (process_xml)")
    print(
        f"{'input':<6} {'on disk':>9} {'seconds':>8} {'MB/s':>7} {'peak RSS':>9} "
        f"{'time ×':>7} {'RSS ×':>6}"
    )
    base: dict[str, float] = {}
    for fmt, path in rows:
        started = time.perf_counter()
        m = measure(path)
        base = base or m
        print(
            f"{fmt:<6} {path.stat().st_size / 1e6:>7.1f}MB {m['seconds']:>8.2f} "
            f"{size / 1e6 / m['seconds']:>7.1f} {m['rss_mib']:>6.1f}MiB "
            f"{m['seconds'] / base['seconds']:>7.2f} {m['rss_mib'] / base['rss_mib']:>6.2f}"
            f"   ({time.perf_counter() - started:.1f} s with start-up)"
        )


if __name__ == "__main__":
    main()
