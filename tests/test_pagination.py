"""Cursor pagination (ENDPOINTS.md §4) over 250 messages in one fresh thread."""

from __future__ import annotations

import math

import openai
import pytest

from tests.conftest import _check, make_http

TOTAL = 250


@pytest.fixture(scope="module")
def thread_250(server):
    """A fresh thread holding TOTAL messages; returns (thread_id, ids in creation order)."""
    with make_http(server.url) as h:
        thread_id = h.post("/v1/threads", json={}).json()["id"]
        ids = []
        for i in range(TOTAL):
            r = h.post(f"/v1/threads/{thread_id}/messages", json={"role": "user", "content": f"message {i}"})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
    assert len(set(ids)) == TOTAL
    return thread_id, ids


@pytest.fixture
def counting_client(server):
    """An SDK client (responses spec-checked) that records every page request it makes."""
    requests: list = []
    http_client = openai.DefaultHttpxClient(event_hooks={"request": [requests.append], "response": [_check]})
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", http_client=http_client, max_retries=0)
    yield client, requests
    client.close()


def page(http, thread_id, **params) -> dict:
    r = http.get(f"/v1/threads/{thread_id}/messages", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    if body["data"]:
        assert body["first_id"] == body["data"][0]["id"]
        assert body["last_id"] == body["data"][-1]["id"]
    else:
        assert body["first_id"] is None and body["last_id"] is None
    return body


def ids_of(body: dict) -> list[str]:
    return [m["id"] for m in body["data"]]


# --- SDK auto-pagination -----------------------------------------------------------------------

@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [7, 50, 100])
def test_auto_pagination_walks_everything_once(thread_250, counting_client, order, limit):
    thread_id, ids = thread_250
    client, requests = counting_client
    walked = [m.id for m in client.beta.threads.messages.list(thread_id, limit=limit, order=order)]
    expected = ids if order == "asc" else ids[::-1]
    assert walked == expected
    # One request per page; a full last page already says has_more=false (no empty extra page).
    assert len(requests) == math.ceil(TOTAL / limit)
    for request in requests[1:]:
        assert "after=" in str(request.url)


def test_auto_pagination_with_default_limit(thread_250, counting_client):
    thread_id, ids = thread_250
    client, requests = counting_client
    walked = [m.id for m in client.beta.threads.messages.list(thread_id)]
    assert walked == ids[::-1]  # default order is desc
    assert len(requests) == math.ceil(TOTAL / 20)


def test_sdk_pages_expose_cursor_fields(thread_250, client):
    thread_id, ids = thread_250
    first = client.beta.threads.messages.list(thread_id, limit=30, order="asc")
    assert [m.id for m in first.data] == ids[:30]
    assert first.has_more is True
    assert first.has_next_page()
    second = first.get_next_page()
    assert [m.id for m in second.data] == ids[30:60]


# --- manual cursors ----------------------------------------------------------------------------

def test_default_limit_is_20_newest_first(thread_250, http):
    thread_id, ids = thread_250
    body = page(http, thread_id)
    assert ids_of(body) == ids[::-1][:20]
    assert body["has_more"] is True


@pytest.mark.parametrize("limit", [1, 2, 99, 100])
def test_limit_bounds_accepted(thread_250, http, limit):
    thread_id, ids = thread_250
    body = page(http, thread_id, limit=limit, order="asc")
    assert ids_of(body) == ids[:limit]
    assert body["has_more"] is True


@pytest.mark.parametrize("limit", [0, -1, 101, 1000])
def test_limit_out_of_bounds_rejected(thread_250, http, client, limit):
    thread_id, _ = thread_250
    r = http.get(f"/v1/threads/{thread_id}/messages", params={"limit": limit})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "limit"
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.threads.messages.list(thread_id, limit=limit)
    assert info.value.param == "limit"


def test_limit_out_of_bounds_on_assistants_list(http):
    for limit in (0, 101):
        r = http.get("/v1/assistants", params={"limit": limit})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "limit"


def test_after_cursor(thread_250, http):
    thread_id, ids = thread_250
    body = page(http, thread_id, order="asc", after=ids[99], limit=10)
    assert ids_of(body) == ids[100:110]
    assert body["has_more"] is True

    body = page(http, thread_id, order="desc", after=ids[100], limit=10)
    assert ids_of(body) == ids[90:100][::-1]
    assert body["has_more"] is True

    # Near the end: a short page and has_more false.
    body = page(http, thread_id, order="asc", after=ids[-4], limit=10)
    assert ids_of(body) == ids[-3:]
    assert body["has_more"] is False
    body = page(http, thread_id, order="desc", after=ids[3], limit=10)
    assert ids_of(body) == ids[:3][::-1]
    assert body["has_more"] is False

    # Exactly the rest: has_more false.
    body = page(http, thread_id, order="asc", after=ids[-11], limit=10)
    assert ids_of(body) == ids[-10:]
    assert body["has_more"] is False


def test_after_the_last_object_is_an_empty_page(thread_250, http):
    thread_id, ids = thread_250
    for order, last in (("asc", ids[-1]), ("desc", ids[0])):
        body = page(http, thread_id, order=order, after=last)
        assert body["data"] == []
        assert body["has_more"] is False


def test_before_cursor(thread_250, http):
    thread_id, ids = thread_250
    # The objects right before the cursor, still in the requested order.
    body = page(http, thread_id, order="asc", before=ids[100], limit=10)
    assert ids_of(body) == ids[90:100]
    assert body["has_more"] is True

    body = page(http, thread_id, order="desc", before=ids[100], limit=10)
    assert ids_of(body) == ids[101:111][::-1]
    assert body["has_more"] is True

    body = page(http, thread_id, order="asc", before=ids[5], limit=10)
    assert ids_of(body) == ids[:5]
    assert body["has_more"] is False

    body = page(http, thread_id, order="asc", before=ids[0])
    assert body["data"] == [] and body["has_more"] is False


def test_walk_backwards_with_before_and_first_id(thread_250, http):
    """Paging back from the end with ``before=first_id`` visits every object once."""
    thread_id, ids = thread_250
    body = page(http, thread_id, order="asc", after=ids[-31], limit=30)
    seen = ids_of(body)
    while True:
        body = page(http, thread_id, order="asc", before=body["first_id"], limit=30)
        if not body["data"]:
            break
        seen = ids_of(body) + seen
        if not body["has_more"]:
            break
    assert seen == ids


def test_walk_forward_with_last_id(thread_250, http):
    thread_id, ids = thread_250
    seen, params = [], {"order": "desc", "limit": 64}
    while True:
        body = page(http, thread_id, **params)
        seen += ids_of(body)
        if not body["has_more"]:
            break
        params["after"] = body["last_id"]
    assert seen == ids[::-1]


def test_after_and_before_together(thread_250, http):
    thread_id, ids = thread_250
    body = page(http, thread_id, order="asc", after=ids[10], before=ids[20], limit=100)
    assert ids_of(body) == ids[11:20]
    assert body["has_more"] is False
    body = page(http, thread_id, order="asc", after=ids[10], before=ids[20], limit=5)
    assert ids_of(body) == ids[11:16]
    assert body["has_more"] is True


def test_unknown_cursor_is_rejected(thread_250, http):
    thread_id, _ = thread_250
    for param in ("after", "before"):
        r = http.get(f"/v1/threads/{thread_id}/messages", params={param: "msg_doesnotexist"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    # A message of another thread is not a cursor here.
    other = http.post("/v1/threads", json={"messages": [{"role": "user", "content": "x"}]}).json()["id"]
    foreign = http.get(f"/v1/threads/{other}/messages").json()["data"][0]["id"]
    r = http.get(f"/v1/threads/{thread_id}/messages", params={"after": foreign})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "after"


def test_bad_order_is_rejected(thread_250, http):
    thread_id, _ = thread_250
    r = http.get(f"/v1/threads/{thread_id}/messages", params={"order": "sideways"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "order"


def test_assistant_list_auto_pagination(client, counting_client):
    """The same cursors work on /assistants; newly made ones come back in order across pages."""
    sdk, requests = counting_client
    start = client.beta.assistants.create(model="gpt-4o", name="page-start").id
    made = [client.beta.assistants.create(model="gpt-4o", name=f"page-{i}").id for i in range(7)]
    walked = [a.id for a in sdk.beta.assistants.list(limit=3, order="asc", after=start)]
    assert walked == made
    assert len(requests) == math.ceil(len(made) / 3)
    # In desc order the objects "before" the oldest new one are the newer ones nearest to it.
    first = sdk.beta.assistants.list(limit=3, order="desc", before=start)
    assert [a.id for a in first.data] == made[:3][::-1]
    assert first.has_more is True
