"""Property tests: the SSE encoder and the upload path, against independent decoders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from httpx_sse._decoders import SSEDecoder
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xmlflow import sse
from xmlflow.app import create_app

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


def decode(frame: bytes) -> list[tuple[str, str, str | None]]:
    """Decode with httpx-sse's decoder, as a client would."""
    decoder = SSEDecoder()
    events = []
    for line in frame.decode().split("\n")[:-1]:  # the last "\n" ends the last line
        event = decoder.decode(line)
        if event is not None:
            events.append((event.event, event.data, event.id or None))
    return events


@given(data=text, event=st.from_regex(r"[a-z]{1,10}", fullmatch=True), id=st.integers(1, 10**9))
def test_any_text_round_trips_through_a_real_decoder(data: str, event: str, id: int) -> None:
    frame = sse.encode(data, event=event, id=id)
    normalised = data.replace("\r\n", "\n").replace("\r", "\n")
    assert decode(frame) == [(event, normalised, str(id))]


@given(
    payload=st.dictionaries(
        text, st.one_of(text, st.integers(-(2**63), 2**63 - 1), st.none()), max_size=5
    )
)
def test_json_payloads_are_one_frame_and_one_data_line(payload: dict[str, object]) -> None:
    frame = sse.encode(payload, event="step", id=1)
    assert frame.count(b"\n\n") == 1 and frame.endswith(b"\n\n")
    assert frame.count(b"\ndata: ") == 1


@given(event=text, id=text)
def test_hostile_event_and_id_cannot_break_the_framing(event: str, id: str) -> None:
    frame = sse.encode("x", event=event, id=id)
    decoded = decode(frame)
    assert len(decoded) == 1 and decoded[0][1] == "x"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    root = tmp_path_factory.mktemp("fuzz-upload")
    config = root / "config.py"
    config.write_text(
        "PROCESSING_STEPS = [{'id': 'cleanup', 'module': 'run_cleanup_step', 'delay': 60}]\n"
    )
    app = create_app({"data_dir": root / "data", "config_path": config, "workers": 1})
    with app.test_client() as c:
        yield c
    app.extensions["xmlflow"].close()


# An upload that starts like a compressed file is decompressed (docs/api.md): random bytes
# after such a start are a broken archive, which gets 422, not a job.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04", b"PK\x05\x06")
names = st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=300)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names, body=st.binary(max_size=2000))
@example(name="a.xml", body=b"BZh")  # starts like bzip2: a broken archive
def test_any_file_name_becomes_a_job_with_a_harmless_name(
    client: FlaskClient, name: str, body: bytes
) -> None:
    import io

    response = client.post(
        "/upload",
        data={"file": (io.BytesIO(body), name)},
        content_type="multipart/form-data",
    )
    data_dir: Path = client.application.extensions["xmlflow"].data_dir
    if response.status_code == 400:  # no usable file part: werkzeug drops an empty name
        assert list((data_dir / "incoming").iterdir()) == []
        return
    if body.startswith(COMPRESSED_MAGIC):  # read as .gz/.bz2/.xz/.zip: refused when broken
        assert response.status_code in (202, 413, 422), response.get_json()
        if response.status_code != 202:
            assert list((data_dir / "incoming").iterdir()) == []
            return
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["jobs"][0]["id"]
    job = client.get(f"/api/jobs/{job_id}").get_json()
    shown = job["filename"]
    assert "/" not in shown and "\\" not in shown and "\x00" not in shown
    assert shown.strip(" .") == shown and 0 < len(shown) <= 200
    assert all(c.isprintable() for c in shown)
    assert (data_dir / "jobs" / job_id / "source").read_bytes() == body
    client.post(f"/api/jobs/{job_id}/cancel")
