"""relay.capture.redact: `--record-redact tags.email,text` hides those fields in json and bytes bodies alike, each
value replaced by a hash of the same length (equal values equal, within one recording), the rest untouched."""

from __future__ import annotations

import orjson
import pytest

from relay.capture.redact import RedactError, Redactor, parse_fields
from relay.wire import proto_codec
from relay.wire.documents import Document
from relay.wire.messages import DataRequest

KEY = b"0123456789abcdef"


def _docs() -> list[dict[str, object]]:
    return [
        {"id": "a", "text": "alice's secret", "tags": {"email": "alice@example.com", "plan": "pro", "n": 7},
         "chunks": [{"text": "chunk text", "tags": {"email": "c@example.com"}}]},
        {"id": "b", "text": "alice's secret", "tags": {"email": "bob@example.com"}},
        {"id": "c", "uri": "https://example.com/x"},
    ]


def test_json_bodies_keep_their_shape_and_lengths() -> None:
    redactor = Redactor(parse_fields("tags.email,text"), KEY)
    body = orjson.dumps({"data": _docs(), "execEndpoint": "/index", "parameters": {"k": "v"}})
    out = orjson.loads(redactor.body(body, "json"))
    original = orjson.loads(body)
    for got, was in zip(out["data"], original["data"], strict=True):
        assert got["id"] == was["id"]
        for key in ("text",):
            if key in was:
                assert got[key] != was[key] and len(got[key]) == len(was[key])
        if "tags" in was:
            assert got["tags"]["email"] != was["tags"]["email"]
            assert len(got["tags"]["email"]) == len(was["tags"]["email"])
            assert {k: v for k, v in got["tags"].items() if k != "email"} == {
                k: v for k, v in was["tags"].items() if k != "email"}
    assert out["data"][0]["text"] == out["data"][1]["text"]  # equal values, equal hashes
    assert out["data"][0]["chunks"][0]["tags"]["email"] != "c@example.com"  # chunks are documents too
    assert out["data"][2] == original["data"][2]
    assert out["parameters"] == {"k": "v"} and out["execEndpoint"] == "/index"
    assert isinstance(redactor.body(body.decode(), "json"), str)  # a text frame stays text


def test_bytes_bodies_are_redacted_the_same_way() -> None:
    redactor = Redactor(parse_fields("tags.email,text,parameters.token"), KEY)
    docs = [Document.from_json_dict(d) for d in _docs()]
    body = proto_codec.encode(DataRequest(request_id="r1", exec_endpoint="/index", docs=docs,
                                          parameters={"token": "s3cr3t", "keep": "me"}))
    out = proto_codec.decode(redactor.body(body, "bytes"))
    assert out.request_id == "r1" and out.exec_endpoint == "/index"
    assert out.parameters is not None and out.parameters["keep"] == "me"
    assert out.parameters["token"] != "s3cr3t" and len(out.parameters["token"]) == 6
    assert out.docs is not None
    assert [d.id for d in out.docs] == ["a", "b", "c"]
    json_redactor = Redactor(parse_fields("tags.email,text"), KEY)
    json_out = orjson.loads(json_redactor.body(orjson.dumps({"data": _docs()}), "json"))
    # The same key gives the same hashes whatever the subprotocol carried.
    assert out.docs[0].text == json_out["data"][0]["text"]
    assert out.docs[0].tags is not None and out.docs[0].tags["email"] == json_out["data"][0]["tags"]["email"]
    assert out.docs[0].tags["plan"] == "pro"
    assert out.docs[0].chunks and out.docs[0].chunks[0].text != "chunk text"
    assert out.docs[2].uri == "https://example.com/x"


def test_answers_are_redacted_like_their_requests() -> None:
    redactor = Redactor(parse_fields("id,text"), KEY)
    request = orjson.loads(redactor.body(orjson.dumps({"data": [{"id": "doc-1", "text": "hi"}]}), "json"))
    answer = DataRequest(request_id="r", docs=[Document(id="doc-1", text="HI")], parameters={})
    redacted = proto_codec.decode(redactor.body(proto_codec.encode(answer), "bytes"))
    assert redacted.docs is not None and redacted.docs[0].id == request["data"][0]["id"] != "doc-1"
    assert redacted.docs[0].text != "HI" and redacted.request_id == "r"


def test_keys_differ_between_recordings() -> None:
    body = orjson.dumps({"data": [{"text": "same"}]})
    assert Redactor(parse_fields("text")).body(body, "json") != Redactor(parse_fields("text")).body(body, "json")


def test_non_string_values_become_strings_of_their_json_length() -> None:
    redactor = Redactor(parse_fields("tags.n"), KEY)
    out = orjson.loads(redactor.body(orjson.dumps({"data": [{"tags": {"n": 12345}}]}), "json"))
    assert isinstance(out["data"][0]["tags"]["n"], str) and len(out["data"][0]["tags"]["n"]) == 5


def test_an_unparsable_body_is_recorded_empty_not_in_clear() -> None:
    redactor = Redactor(parse_fields("text"), KEY)
    assert redactor.body(b"not json", "json") == b""
    assert redactor.body(b"\xff\xff\xff", "bytes") == b""
    assert redactor.failures == 2


@pytest.mark.parametrize(("spec", "words"), [
    ("embedding", "text or bytes field"),
    ("tags", "name a key inside tags"),
    ("text.x", "text or bytes field"),
    ("tags..x", "empty part"),
    (" , ", "no field"),
])
def test_fields_that_cannot_be_redacted_are_refused(spec: str, words: str) -> None:
    with pytest.raises(RedactError, match=words):
        parse_fields(spec)
