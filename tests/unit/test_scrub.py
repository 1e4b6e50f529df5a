"""Secret scrubbing (``devtrail.consumers.scrub``): what it replaces, what it leaves alone, and that
neither the clean rows nor the dead letters of the processors carry a secret."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtrail.consumers.clean import CleanRow, decode_rows
from devtrail.consumers.deadletter import DeadLetter
from devtrail.consumers.processor.dedup import DedupIndex
from devtrail.consumers.processor.pipeline import SourceMessage, process_batch
from devtrail.consumers.scrub import KINDS, may_hold_secret, scrub_bytes, scrub_json, scrub_text
from devtrail.schemas.codec import encode_event
from devtrail.schemas.errors import DecodeError
from tests.factories import llm_called, task_created

# Secrets of every kind, as they appear in the wild (none of them real).
SECRETS = {
    "openai": ("sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z", "api_key"),
    "anthropic": ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "api_key"),
    "github": ("ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "api_key"),
    "github_fine": ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "api_key"),
    "gitlab": ("glpat-AbCdEfGhIjKlMnOpQrSt", "api_key"),
    "slack": ("xoxb-1234567890-0987654321-AbCdEfGhIjKl", "api_key"),
    "aws": ("AKIAIOSFODNN7EXAMPLE", "api_key"),
    "google": ("AIzaSyA-1234567890abcdefghijklmnopqrstu", "api_key"),
    "stripe": ("sk_live_AbCdEfGhIjKlMnOpQrSt1234", "api_key"),
    "linear": ("lin_api_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789", "api_key"),
    "huggingface": ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", "api_key"),
    "jwt": (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvZSJ9"
        ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "jwt",
    ),
    "pem": (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
        "AAAAAAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIG\n-----END OPENSSH PRIVATE KEY-----",
        "private_key",
    ),
}


def scrubbed(text: str) -> tuple[str, Counter[str]]:
    found: Counter[str] = Counter()
    return scrub_text(text, found), found


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_each_shape_of_secret_is_replaced_in_free_text_and_counted(name: str) -> None:
    secret, kind = SECRETS[name]
    out, found = scrubbed(f"ran the tool with {secret} and it worked")
    assert secret not in out
    assert f"[REDACTED:{kind}]" in out and out.startswith("ran the tool with ") and out.endswith(" and it worked")
    assert found == Counter({kind: 1})


@pytest.mark.parametrize(
    ("text", "kept", "kind"),
    [
        ("curl -H 'Authorization: Bearer abc123def456ghi789'", "Authorization: Bearer ", "bearer_token"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "Basic ", "bearer_token"),
        ("DATABASE_URL=postgres://app:s3cr3t@db:5432/app", "postgres://app:REDACTED@db:5432/app", "connection_string"),
        ("mongodb+srv://admin:hunter2@cluster0.example.net/db", "mongodb+srv://admin:REDACTED@", "connection_string"),
        ("login with password=hunter22 now", "password=", "password"),
        ("PASSWORD: 'correct horse'", "PASSWORD: '", "password"),
        ("my password is tr0ub4dor", "my password is ", "password"),
        ("client_secret=abcDEF123456", "client_secret=", "api_key"),
        ("API_KEY=0123456789abcdef", "API_KEY=", "api_key"),
        ("access_token: ya29.a0AfH6SMBx", "access_token: ", "api_key"),
    ],
)
def test_credentials_after_a_name_or_a_scheme_are_replaced_and_the_rest_kept(text: str, kept: str, kind: str) -> None:
    out, found = scrubbed(text)
    assert kept in out
    assert found[kind] == 1, (out, found)
    assert out != text


@pytest.mark.parametrize(
    "text",
    [
        "fix task-123 for SHOP-42 on branch feat/shop-42-checkout",
        "commit 0123456789abcdef0123456789abcdef01234567 of acme/web#12",
        "01938a2b-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        "https://github.com/acme/web/pull/12 and postgres://db:5432/app (no credentials)",
        "$ pwd: /home/agent/work; 12 tests passed, 1 secret-free file",
        "the basic idea: a bearer of bad news",
        "input_tokens=900 output_tokens=120 max_tokens=4096",
        "risk-assessment-document-for-the-quarterly-review",
        "Asia/Tokyo",
    ],
)
def test_ordinary_text_is_left_exactly_as_it_was(text: str) -> None:
    out, found = scrubbed(text)
    assert (out, found) == (text, Counter())


def test_a_json_object_has_the_values_of_its_secret_keys_replaced_at_any_depth() -> None:
    document = {
        "password": "x",
        "api_key": "abc",
        "Token": "t0k",
        "nested": [{"client-secret": "zz", "count": 3}],
        "headers": {"Authorization": "Basic Zm9vOmJhcg==", "Accept": "application/json"},
        "input_tokens": 900,
        "empty_password": "",
    }
    found: Counter[str] = Counter()
    out = orjson.loads(scrub_json(orjson.dumps(document).decode(), found))
    assert out == {
        "password": "[REDACTED:password]",
        "api_key": "[REDACTED:api_key]",
        "Token": "[REDACTED:api_key]",
        "nested": [{"client-secret": "[REDACTED:api_key]", "count": 3}],
        "headers": {"Authorization": "[REDACTED:bearer_token]", "Accept": "application/json"},
        "input_tokens": 900,
        "empty_password": "",
    }
    assert found == Counter({"api_key": 3, "password": 1, "bearer_token": 1})


def test_json_without_secrets_is_returned_as_the_same_object() -> None:
    text = orjson.dumps({"prompt": "summarise the diff", "input_tokens": 5, "tests_passed": 3}).decode()
    assert scrub_json(text, Counter()) is text


def test_integers_beyond_64_bits_survive_a_scrub() -> None:
    text = '{"big": 123456789012345678901234567890, "note": "password=hunter22"}'
    out = scrub_json(text, Counter())
    assert json.loads(out) == {"big": 123456789012345678901234567890, "note": "password=[REDACTED:password]"}


def test_scrubbing_twice_changes_nothing_more() -> None:
    text = orjson.dumps({"a": " ".join(secret for secret, _ in SECRETS.values()), "password": "p"}).decode()
    once = scrub_json(text, Counter())
    found: Counter[str] = Counter()
    assert scrub_json(once, found) == once
    assert found == Counter()


def test_bytes_that_are_not_utf8_are_scrubbed_and_the_rest_kept_byte_for_byte() -> None:
    data = b"\xff\xfe garbage Bearer abcdefghijklmnopqrstuvwxyz \x00 end"
    found: Counter[str] = Counter()
    out = scrub_bytes(data, found)
    assert out == b"\xff\xfe garbage Bearer [REDACTED:bearer_token] \x00 end"
    assert found == Counter({"bearer_token": 1})
    assert scrub_bytes(b"\xff plain", Counter()) == b"\xff plain"


_leaf = st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=20))
_documents = st.recursive(
    _leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)


@settings(max_examples=200, deadline=None)
@given(
    _documents,
    st.sampled_from(sorted(SECRETS)),
    st.text(alphabet=" ,;:\n()[]{}", max_size=3),
)
def test_a_secret_planted_anywhere_in_a_document_never_survives(document: Any, name: str, around: str) -> None:
    secret, _ = SECRETS[name]
    planted = {"free": f"{around}{secret}{around}", "data": document, "list": [document, {"k": secret}]}
    out = scrub_json(json.dumps(planted), Counter())
    assert secret not in out
    assert secret not in out.replace("\\n", "\n")  # not even with its newlines escaped
    decoded = json.loads(out)  # still JSON, integers of any size exact
    assert decoded["data"] == json.loads(scrub_json(json.dumps(document), Counter()))


def test_every_kind_is_named() -> None:
    assert {kind for _, kind in SECRETS.values()} | {"bearer_token", "password", "connection_string"} == set(KINDS)


# The processors: the clean rows and the dead letters they make.


def msg(value: bytes, offset: int = 0) -> SourceMessage:
    return SourceMessage("in", 0, offset, value)


def test_the_processor_stores_the_payload_redacted_and_counts_what_it_replaced() -> None:
    secret = SECRETS["anthropic"][0]
    event = task_created(payload={"title": "rotate keys", "description": f"old key {secret}; password=hunter22"})
    outcome = process_batch([msg(encode_event(event))], DedupIndex(60), 0.0)
    [row] = [CleanRow(*r) for bundle in outcome.bundles[0] for r in decode_rows(bundle)]
    assert secret not in row.payload and "hunter22" not in row.payload
    assert row.event().payload.description == "old key [REDACTED:api_key]; password=[REDACTED:password]"
    assert outcome.scrubbed == Counter({"api_key": 1, "password": 1})


def test_with_scrubbing_off_the_payload_is_stored_as_sent() -> None:
    event = task_created(payload={"title": "t", "description": "password=hunter22"})
    outcome = process_batch([msg(encode_event(event))], DedupIndex(60), 0.0, scrub=False)
    [row] = [CleanRow(*r) for bundle in outcome.bundles[0] for r in decode_rows(bundle)]
    assert "hunter22" in row.payload and outcome.scrubbed == Counter()


def test_a_secret_in_a_field_whose_format_refuses_the_redaction_is_dead_lettered_without_it() -> None:
    secret = SECRETS["github"][0]
    event = orjson.loads(encode_event(llm_called()))
    event["event_type"] = "pr.opened"
    event["task_id"] = "T-1"
    event["payload"] = {
        "repository": "acme/web",
        "number": 7,
        "branch": f"leak-{secret}",  # a branch name cannot hold '[REDACTED:api_key]'
        "title": "t",
        "head_sha": "0123456789abcdef0123456789abcdef01234567",
        "author": "a",
        "author_kind": "agent",
    }
    outcome = process_batch([msg(orjson.dumps(event))], DedupIndex(60), 0.0)
    assert outcome.bundles == {} or not any(outcome.bundles.values())
    [dead] = outcome.dead_letters
    assert dead.error_kind == "secret"
    record = dead.to_json()
    assert secret.encode() not in record
    body = orjson.loads(record)
    assert secret.encode() not in base64.b64decode(body["original_base64"])
    assert "[REDACTED:api_key]" in body["original"]


def test_a_dead_letter_never_carries_a_secret_from_its_original_or_its_error() -> None:
    secret = SECRETS["openai"][0]
    original = b'{"not json: ' + secret.encode() + b" password=hunter22"
    dead = DeadLetter.for_error(DecodeError(f"cannot decode {secret}"), "in", 0, 1, original)
    record = dead.to_json()
    assert secret.encode() not in record and b"hunter22" not in record
    body = orjson.loads(record)
    assert secret.encode() not in base64.b64decode(body["original_base64"])
    assert body["original_size"] == len(base64.b64decode(body["original_base64"]))


def test_the_first_look_passes_over_ordinary_payloads_without_a_closer_look() -> None:
    # What most events hold: the closer look (parse and walk) must stay the exception.
    assert not may_hold_secret('{"parent_task_id":"T-1","input_tokens":5,"output_tokens":9,"model":"m"}')
    assert not may_hold_secret('{"tool_name":"bash","work_dir":"/tmp","shelf_life":3}')
    for secret, _ in SECRETS.values():
        assert may_hold_secret(f"x {secret} y")
    for key in ("Token", "access_token", "authToken", "id-token", "API_KEY", "Authorization", "pwd"):
        assert may_hold_secret(f'{{"{key}": "v"}}'), key
