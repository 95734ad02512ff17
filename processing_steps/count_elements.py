"""An example user step: counts the elements of each name and writes ``<stem>.counts.json``."""

from collections import Counter

import orjson
from lxml import etree

from xmlflow.step import StepContext
from xmlflow.xml import safe_iterparse


def run_count_elements_step(ctx: StepContext) -> None:
    counts: Counter[str] = Counter()
    size = max(ctx.input.stat().st_size, 1)
    with ctx.input.open("rb") as f:
        for n, (_, element) in enumerate(safe_iterparse(f, events=("end",)), 1):
            counts[etree.QName(element).localname] += 1
            element.clear(keep_tail=True)
            if n % 10_000 == 0:
                if ctx.cancelled:
                    return
                ctx.progress(f.tell() / size, f"{n} elements")
    with ctx.open_output(f"{ctx.stem}.counts.json", "wb") as out:
        out.write(orjson.dumps(dict(counts.most_common()), option=orjson.OPT_INDENT_2))
