"""The native core as users run it: whole ``xmlflow run`` processes against the recipe.

Each contender is one process, start-up included, measured by ``os.wait4`` (its CPU
time and peak RSS, children included): the lxml iterparse floor, the recipe users
migrate from (``xmltodict.parse`` + ``json.dump``), ``xmlflow run`` on the native
core in each mode, and ``xmlflow run`` with ``XMLFLOW_NATIVE=0`` (the Python path).
Every xmlflow output is checked: the native and Python ``json`` outputs must be the
same bytes. Ratios are by CPU time (wall time swings with the neighbours' load).

    .venv/bin/python bench/native_throughput.py --size-mb 50

The documents are ``bench/xml_throughput.py``'s (records, and nested chapters).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from xml_throughput import FLOOR, OUT, PEAK, XMLTODICT, generate  # noqa: E402

CONFIG = """PIPELINES = {{"default": [{{"id": "process_xml", "name": "Convert",
    "module": "run_xml_processing_step", "options": {{"mode": "{mode}"}}}}]}}
"""
SUFFIX = {"json": ".json", "jsonl": ".jsonl", "split": ".zip"}
PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Adopt orphaned descendants: ``xmlflow run`` converts in a child of its
    forkserver, which outlives it; reaping them here counts their CPU time too."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``argv``; return (CPU seconds, wall seconds, peak RSS MiB) of its whole tree.

    Every descendant is reaped here (we are their subreaper), so the CPU time is the
    sum over all of them and the peak is the largest process's.
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


def python_code(code: str, src: Path, dst: Path) -> list[str]:
    prelude = f"SRC = {str(src)!r}\nDST = {str(dst)!r}\n"
    return [sys.executable, "-c", prelude + code + PEAK]


def xmlflow_run(src: Path, tmp: Path, mode: str) -> tuple[list[str], Path]:
    config = tmp / f"config_{mode}.py"
    config.write_text(CONFIG.format(mode=mode))
    out = tmp / f"out_{mode}_{len(list(tmp.iterdir()))}"
    xmlflow = Path(sys.executable).parent / "xmlflow"
    argv = [str(xmlflow), "run", "--config", str(config), "--out", str(out), str(src)]
    return argv, out / (src.stem + SUFFIX[mode])


def bench_shape(shape: str, size_mb: int, skip_xmltodict: bool) -> None:
    src = generate(shape, size_mb)
    mb = src.stat().st_size / 1_000_000
    rates: dict[str, float] = {}
    outputs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(dir=OUT) as tmp_name:
        tmp = Path(tmp_name)
        contenders: list[tuple[str, list[str], dict[str, str], Path | None]] = [
            ("lxml iterparse floor", python_code(FLOOR, src, tmp / "floor"), {}, None),
        ]
        if not skip_xmltodict:
            recipe = python_code(XMLTODICT, src, tmp / "xmltodict.json")
            contenders.append(("xmltodict.parse + json.dump", recipe, {}, None))
        for mode in ("json", "jsonl", "split"):
            argv, out = xmlflow_run(src, tmp, mode)
            contenders.append((f"xmlflow run {mode} (native)", argv, {}, out))
        argv, out = xmlflow_run(src, tmp, "json")
        contenders.append(("xmlflow run json (Python path)", argv, {"XMLFLOW_NATIVE": "0"}, out))
        for name, argv, env, out in contenders:
            cpu, wall, peak = measure(argv, env)
            rates[name] = mb / cpu
            if out is not None and out.suffix == ".json":
                outputs[name] = _digest(out)
                out.unlink()
            _row(shape, mb, name, rates, wall, peak)
    if len(set(outputs.values())) != 1:
        raise SystemExit(f"native and Python json outputs differ on {src}")


def _digest(path: Path) -> str:
    """The output's SHA-256, read in chunks: a forked child inherits our peak RSS
    (Linux keeps the pre-exec high-water mark), so this process must stay small."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _row(
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=50)
    ap.add_argument("--shapes", default="records,document")
    ap.add_argument("--skip-xmltodict", action="store_true", help="skip the slow whole-tree run")
    args = ap.parse_args()
    _become_subreaper()
    load = os.getloadavg()
    print("| shape | contender | MB/s (CPU) | MB/s (wall) | peak RSS MiB | × xmltodict | × floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in args.shapes.split(","):
        bench_shape(shape, args.size_mb, args.skip_xmltodict)
    print(json.dumps({"python": sys.version.split()[0], "load": [load, os.getloadavg()]}))


if __name__ == "__main__":
    main()
