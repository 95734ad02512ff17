"""XML → JSON throughput and memory: xmlflow against xmltodict and a bare lxml floor.

Generates deterministic XML of ``--size-mb`` in four shapes (records, the same
records namespaced, a book of chapters, one big record: see :data:`SHAPES`)
(under ``bench/out/``, git-ignored) and prints one table, every contender side by
side in the same run, with MB/s, peak RSS and ratios (by CPU time) to xmltodict and
to the lxml floor:

- the lxml iterparse floor and the recipe users migrate from (``xmltodict.parse`` +
  ``json.dump``), and xmltodict's streaming mode;
- ``xmlflow run`` as users run it, a whole process (start-up, its zygote, the job's
  process) on the native core in each mode, and in ``json``
  with ``XMLFLOW_NATIVE=0`` (the pure-Python path);
- the ``process_xml`` step alone in one interpreter, native and Python.

Each contender is one process tree; this script is its subreaper, so its CPU time is
the sum over every process of the tree (``os.wait4``) and its peak RSS the largest
process's. The native and Python ``json`` outputs are checked to be the same bytes.
xmlflow's bytecode is written first, as an installed package has it (see
:func:`compile_xmlflow`).

    .venv/bin/python bench/xml_throughput.py --size-mb 50 --shapes records,document
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.util
import json
import os
import random
import re
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


CONFIG = """PIPELINES = {{"default": [{{"id": "process_xml", "name": "Convert",
    "module": "run_xml_processing_step", "options": {{"mode": "{mode}"}}}}]}}
"""
SUFFIX = {"json": ".json", "jsonl": ".jsonl", "split": ".zip"}
PR_SET_CHILD_SUBREAPER = 36
PYTHON_PATH = {"XMLFLOW_NATIVE": "0"}


def become_subreaper() -> None:
    """Adopt orphaned descendants (a process a contender left running), so that reaping
    them here counts their CPU time too."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``argv``; return (CPU seconds, wall seconds, peak RSS MiB) of its whole tree.

    Every descendant is reaped here (we are their subreaper), so the CPU time is the
    sum over all of them and the peak is the largest process's. CPU time is what the
    ratios use: on a shared machine wall time swings by 2× with the neighbours' load.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    cpu, peak, code = 0.0, 0, None
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            break
        cpu += usage.ru_utime + usage.ru_stime
        peak = max(peak, usage.ru_maxrss)
        if pid == proc.pid:
            code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code:
        raise RuntimeError(f"{argv} failed with {code}")
    return cpu, time.perf_counter() - start, peak / 1024


def compile_xmlflow() -> None:
    """Write xmlflow's ``.pyc`` files, as ``pip install`` does for the other contenders'
    libraries. Under ``PYTHONDONTWRITEBYTECODE=1`` (set in some shells and containers)
    an editable install has none, and every process of every ``xmlflow run`` compiled
    its modules from source: about 50 ms of a run's CPU time. In a child process: this
    one stays small (see :func:`digest`)."""
    spec = importlib.util.find_spec("xmlflow")
    assert spec is not None and spec.submodule_search_locations, "xmlflow is not installed"
    for folder in spec.submodule_search_locations:
        subprocess.run([sys.executable, "-m", "compileall", "-q", folder], check=True)


def python_code(code: str, src: Path, dst: Path, mode: str = "json") -> list[str]:
    prelude = f"SRC = {str(src)!r}\nDST = {str(dst)!r}\nMODE = {mode!r}\n"
    return [sys.executable, "-c", prelude + code]


def xmlflow_run(src: Path, tmp: Path, mode: str) -> tuple[list[str], Path]:
    """``xmlflow run`` on ``src`` with a one-step pipeline in ``mode``; (argv, output)."""
    config = tmp / f"config_{mode}.py"
    config.write_text(CONFIG.format(mode=mode))
    out = tmp / f"out_{mode}_{len(list(tmp.iterdir()))}"
    xmlflow = Path(sys.executable).parent / "xmlflow"
    argv = [str(xmlflow), "run", "--config", str(config), "--out", str(out), str(src)]
    return argv, out / (src.stem + SUFFIX[mode])


def digest(path: Path) -> str:
    """The output's SHA-256, read in chunks: a forked child inherits our peak RSS
    (Linux keeps the pre-exec high-water mark), so this process must stay small."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


Contender = tuple[str, list[str], dict[str, str], Path | None]


def contenders(src: Path, tmp: Path, skip_xmltodict: bool) -> list[Contender]:
    """Every contender on ``src``: (name, argv, environment, json output to compare)."""
    found: list[Contender] = [
        ("lxml iterparse floor", python_code(FLOOR, src, tmp / "floor"), {}, None),
    ]
    if not skip_xmltodict:
        recipe = python_code(XMLTODICT, src, tmp / "xmltodict.json")
        found.append(("xmltodict.parse + json.dump", recipe, {}, None))
    stream = python_code(XMLTODICT_STREAM, src, tmp / "xmltodict.jsonl")
    found.append(("xmltodict streaming (item_depth=2)", stream, {}, None))
    for mode in ("json", "jsonl", "split"):
        argv, out = xmlflow_run(src, tmp, mode)
        found.append((f"xmlflow run {mode} (native)", argv, {}, out if mode == "json" else None))
    argv, out = xmlflow_run(src, tmp, "json")
    found.append(("xmlflow run json (Python path)", argv, PYTHON_PATH, out))
    step = tmp / "step"
    found.append(("process_xml json alone (native)", python_code(XMLFLOW, src, step), {}, None))
    python_step = python_code(XMLFLOW, src, tmp / "step-py")
    found.append(("process_xml json alone (Python path)", python_step, PYTHON_PATH, None))
    return found


def bench_shape(shape: str, size_mb: int, skip_xmltodict: bool, repeat: int) -> None:
    src = generate(shape, size_mb)
    mb = src.stat().st_size / 1_000_000
    rates: dict[str, float] = {}
    outputs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp_name:
        for name, argv, env, out in contenders(src, Path(tmp_name), skip_xmltodict):
            cpu, wall, peak = min(measure(argv, env) for _ in range(repeat))
            rates[name] = mb / cpu
            if out is not None:
                outputs[name] = digest(out)
                out.unlink()
            row(shape, mb, name, rates, wall, peak)
    if len(set(outputs.values())) > 1:
        raise SystemExit(f"native and Python json outputs differ on {src}")


def row(
    shape: str, mb: float, name: str, rates: dict[str, float], wall: float, peak: float
) -> None:
    base = rates.get("xmltodict.parse + json.dump")
    floor = rates["lxml iterparse floor"]
    ratio = f"{rates[name] / base:.2f}" if base else "–"
    print(
        f"| {shape} {mb:.0f} MB | {name} | {rates[name]:.1f} | {mb / wall:.1f} | {peak:.0f} "
        f"| {ratio} | {rates[name] / floor:.2f} |",
        flush=True,
    )


def main(size_mb: int = 200, shapes: str = ",".join(SHAPES)) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=size_mb)
    ap.add_argument("--shapes", default=shapes)
    ap.add_argument("--skip-xmltodict", action="store_true", help="skip the slow whole-tree run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender; the best counts")
    args = ap.parse_args()
    compile_xmlflow()
    become_subreaper()
    load = os.getloadavg()
    print("| shape | contender | MB/s (CPU) | MB/s (wall) | peak RSS MiB | × xmltodict | × floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in args.shapes.split(","):
        bench_shape(shape, args.size_mb, args.skip_xmltodict, args.repeat)
    print(json.dumps({"python": sys.version.split()[0], "load": [load, os.getloadavg()]}))


if __name__ == "__main__":
    main()
