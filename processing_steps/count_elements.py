"""An example user step: counts the elements of each name, writes ``<stem>.counts.json``.

Add it to a pipeline in ``config.py``::

    {"id": "count_elements", "name": "Count elements", "module": "run_count_elements_step"}

It parses with xmlflow's hardened parser (no network, no external entities) and a
parser *target*, so no tree is built: memory stays flat whatever the file's size.
"""

from collections import Counter

import orjson
from lxml import etree

from xmlflow.errors import JobCancelled
from xmlflow.inputs import source_position
from xmlflow.step import StepContext
from xmlflow.xml.parser import safe_parser, xml_error

CHUNK = 1 << 16


class _Counter:
    """A parser target: lxml calls ``start`` for every element, nothing is kept."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def start(self, tag: str, attrib: object) -> None:
        self.counts[etree.QName(tag).localname] += 1

    def close(self) -> None:
        pass


def run_count_elements_step(ctx: StepContext) -> None:
    target = _Counter()
    parser = safe_parser(target=target)
    size = max(ctx.input.stat().st_size, 1)
    with ctx.open_input() as f:  # a .gz/.bz2/.xz upload reads as the document inside
        try:
            while chunk := f.read(CHUNK):
                parser.feed(chunk)
                if ctx.cancelled:
                    raise JobCancelled("cancelled")
                done = source_position(f, f.tell())  # compressed bytes, if it is compressed
                ctx.progress(done / size, f"{sum(target.counts.values())} elements")
            parser.close()
        except etree.XMLSyntaxError as exc:
            raise xml_error(exc, ctx.filename) from None
    with ctx.open_output(f"{ctx.stem}.counts.json", "wb") as out:
        out.write(orjson.dumps(dict(target.counts.most_common()), option=orjson.OPT_INDENT_2))
