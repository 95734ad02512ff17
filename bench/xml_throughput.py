"""XML → JSON throughput and memory: xmlflow against xmltodict and a bare lxml floor.

Generates deterministic XML of ``--size-mb`` in four shapes (records, the same
records namespaced, a book of chapters, one big record: see :data:`SHAPES`)
(under ``bench/out/``, git-ignored), runs every contender in its own subprocess (so
each peak RSS is its own, read from ``/proc/self/status`` VmHWM, and its CPU time
its own, from ``getrusage(RUSAGE_CHILDREN)``) and prints one table with MB/s, peak
RSS and ratios (by CPU time) to xmltodict and to the lxml floor.

    .venv/bin/python bench/xml_throughput.py --size-mb 200

xmlflow runs through the ``process_xml`` step, exactly as users run it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "out"
WORDS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
    "sigma tau upsilon phi chi psi omega caf\u00e9 na\u00efve \u20ac"
).split()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _record(rng: random.Random, i: int) -> str:
    tags = "".join(f"<tag>{rng.choice(WORDS)}</tag>" for _ in range(rng.randint(1, 4)))
    return (
        f'  <record id="{i}" type="{rng.choice(WORDS)}">'
        f"<name>{_words(rng, 2)}</name><email>user{i}@example.com</email>"
        f"<amount>{rng.randint(0, 99999) / 100}</amount><active>{rng.random() < 0.5}</active>"
        f"<tags>{tags}</tags><address><street>{rng.randint(1, 999)} {_words(rng, 2)}</street>"
        f"<city>{_words(rng, 1)}</city><zip>{rng.randint(10000, 99999)}</zip></address>"
        f"<note>{_words(rng, rng.randint(3, 12))} &amp; more</note>"
        "</record>\n"
    )


def _chapter(rng: random.Random, i: int) -> str:
    sections = []
    for s in range(rng.randint(2, 5)):
        paras = "".join(
            f"<para>{_words(rng, 8)} <b>{_words(rng, 2)}</b> {_words(rng, 6)}"
            f' <link href="#s{s}">see</link>.</para>'
            for _ in range(rng.randint(3, 8))
        )
        sections.append(f'<section id="c{i}s{s}"><title>{_words(rng, 3)}</title>{paras}</section>')
    return f'  <chapter n="{i}"><title>{_words(rng, 4)}</title>{"".join(sections)}</chapter>\n'


_TAG = re.compile(r"<(/?)([a-z]+)")
NS_DECLARATIONS = " ".join(
    ['xmlns:r="urn:example:records"', 'xmlns:w="urn:example:words"']
    + [f'xmlns:x{i}="urn:example:extra:{i}"' for i in range(20)]
)


def _namespaced(block: str) -> str:
    """The same markup with every element prefixed (``<r:record>``)."""
    return _TAG.sub(r"<\1r:\2", block)


def _paragraph(rng: random.Random, i: int) -> str:
    return (
        f'<w:p w:id="{i}"><w:pPr><w:pStyle w:val="Body"/></w:pPr><w:r><w:rPr><w:b/></w:rPr>'
        f"<w:t>{_words(rng, 3)}</w:t></w:r><w:r><w:t>{_words(rng, 12)}</w:t></w:r></w:p>\n"
    )


# shape: (one record's markup, the root's start tag, what wraps the records)
SHAPES = {
    "records": (_record, "<records>", ("", "")),
    "records-ns": (
        lambda rng, i: _namespaced(_record(rng, i)),
        f"<r:records {NS_DECLARATIONS}>",
        ("", ""),
    ),
    "document": (_chapter, "<book>", ("", "")),
    "one-record": (_paragraph, f"<w:document {NS_DECLARATIONS}>", ("<w:body>", "</w:body>")),
}
"""``records-ns`` is ``records`` with every element prefixed and 22 declarations on the
root; ``one-record`` is a word-processing body: one child of the root holding it all."""


def generate(shape: str, size_mb: int) -> Path:
    """Write (once) a deterministic document of about ``size_mb`` MB; return its path."""
    path = OUT / f"{shape}-{size_mb}mb.xml"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    make, root, (open_body, close_body) = SHAPES[shape]
    target = size_mb * 1_000_000
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<!-- generated -->\n{root}\n')
        f.write(open_body)
        written, i = 0, 0
        while written < target:
            block = "".join(make(rng, i + k) for k in range(100))
            i += 100
            written += len(block.encode())
            f.write(block)
        f.write(close_body)
        f.write(f"</{root[1:].split()[0].rstrip('>')}>\n")
    tmp.rename(path)
    return path


# -- contenders: each runs in a fresh interpreter; SRC and DST are filled in ----------

FLOOR = """
from lxml import etree
for _, el in etree.iterparse(SRC, events=("end",)):
    el.clear()
"""
XMLTODICT = """
import json, xmltodict
with open(SRC, "rb") as f:
    doc = xmltodict.parse(f)
with open(DST, "w") as f:
    json.dump(doc, f)
"""
XMLTODICT_STREAM = """
import json, xmltodict
with open(SRC, "rb") as f, open(DST, "w") as out:
    def item(path, value):
        out.write(json.dumps(value)); out.write("\\n"); return True
    xmltodict.parse(f, item_depth=2, item_callback=item)
"""
XMLFLOW = """
from pathlib import Path
from xmlflow.step import StepContext
from xmlflow.steps.process_xml import run_xml_processing_step
work = Path(DST)
work.mkdir(exist_ok=True)
ctx = StepContext(job_id="bench", step_id="process_xml", input=Path(SRC), workdir=work,
                  filename=Path(SRC).name, options={"mode": MODE})
run_xml_processing_step(ctx)
"""
PEAK = """
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print("PEAK_KB", line.split()[1])
"""


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(code: str, src: Path, mode: str = "json") -> tuple[float, float, float]:
    """Run ``code`` in a subprocess; return (CPU seconds, wall seconds, peak RSS MiB).

    CPU time is what the ratios use: on a shared machine wall time swings by 2× with
    the neighbours' load, CPU time by a few percent.
    """
    cpu = _child_cpu()
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        dst = Path(tmp) / "out"
        prelude = f"SRC = {str(src)!r}\nDST = {str(dst)!r}\nMODE = {mode!r}\n"
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", prelude + code + PEAK],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - start
    peak_kb = next(int(x.split()[1]) for x in done.stdout.splitlines() if x.startswith("PEAK_KB"))
    return _child_cpu() - cpu, elapsed, peak_kb / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--skip-xmltodict", action="store_true", help="skip the slow whole-tree run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; the best counts")
    args = ap.parse_args()
    contenders = [
        ("lxml iterparse floor", FLOOR, "json"),
        ("xmltodict.parse + json.dump", XMLTODICT, "json"),
        ("xmltodict streaming (item_depth=2)", XMLTODICT_STREAM, "json"),
        ("xmlflow process_xml json", XMLFLOW, "json"),
        ("xmlflow process_xml jsonl", XMLFLOW, "jsonl"),
        ("xmlflow process_xml split", XMLFLOW, "split"),
    ]
    print("| shape | contender | MB/s (CPU) | MB/s (wall) | peak RSS MiB | × xmltodict | × floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in args.shapes.split(","):
        src = generate(shape, args.size_mb)
        mb = src.stat().st_size / 1_000_000
        rates: dict[str, float] = {}
        for name, code, mode in contenders:
            if args.skip_xmltodict and code is XMLTODICT:
                continue
            cpu, wall, peak = min(run(code, src, mode) for _ in range(args.repeat))
            rates[name] = mb / cpu
            base = rates.get("xmltodict.parse + json.dump")
            floor = rates["lxml iterparse floor"]
            ratio = f"{rates[name] / base:.2f}" if base else "–"
            print(
                f"| {shape} {mb:.0f} MB | {name} | {mb / cpu:.1f} | {mb / wall:.1f} | {peak:.0f} "
                f"| {ratio} | {rates[name] / floor:.2f} |",
                flush=True,
            )
    print(json.dumps({"python": sys.version.split()[0], "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
