"""No lost updates over HTTP: 16 clients, half through the API and half through the
dashboard's form, each post 50 messages to the same thread at once, across gunicorn's
processes and threads. All 800 are stored, once each, and each client's messages are in
the order it sent them."""

from __future__ import annotations

import threading
import time

from reliability_testkit import Client, Site, api_client, record_figures, signed_in

CLIENTS = 16
MESSAGES_EACH = 50


def test_sixteen_clients_posting_to_one_thread_lose_nothing(prod_site: Site) -> None:
    setup = api_client(prod_site.base_url)
    created = setup.api("POST", "/threads", {"metadata": {"test": "lost updates"}})
    assert created.status == 200, created.text
    thread = created.json()["id"]
    clients: list[Client] = [
        api_client(prod_site.base_url) if n % 2 else signed_in(prod_site.base_url)
        for n in range(CLIENTS)
    ]
    start = threading.Barrier(CLIENTS, timeout=30)
    answers: list[list[int]] = [[] for _ in range(CLIENTS)]
    returned_ids: list[list[str]] = [[] for _ in range(CLIENTS)]

    def post_all(n: int) -> None:
        client = clients[n]
        start.wait()
        for k in range(MESSAGES_EACH):
            text = f"client {n:02d} message {k:02d}"
            if n % 2:
                reply = client.api(
                    "POST", f"/threads/{thread}/messages", {"role": "user", "content": text}
                )
                if reply.status == 200:
                    returned_ids[n].append(reply.json()["id"])
            else:
                reply = client.form(f"/threads/{thread}/messages", {"text": text})
            answers[n].append(reply.status)

    workers = [threading.Thread(target=post_all, args=(n,)) for n in range(CLIENTS)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert not worker.is_alive()
    seconds = time.monotonic() - began

    for n, statuses in enumerate(answers):
        expected = 200 if n % 2 else 302
        assert statuses == [expected] * MESSAGES_EACH, (n, statuses)
    stored = prod_site.store.list_messages(thread)
    texts = [message.text for message in stored]
    assert len(texts) == CLIENTS * MESSAGES_EACH
    assert len(set(texts)) == len(texts), "a message was stored twice"
    for n in range(CLIENTS):
        own = [text for text in texts if text.startswith(f"client {n:02d} ")]
        assert own == [f"client {n:02d} message {k:02d}" for k in range(MESSAGES_EACH)]
        if n % 2:
            assert [m.id for m in stored if m.text in own] == returned_ids[n]
    # The clients really interleaved: not one after the other.
    switches = sum(1 for a, b in zip(texts, texts[1:], strict=False) if a[:9] != b[:9])
    assert switches > CLIENTS * 4
    record_figures(
        "lost_updates_http",
        clients=CLIENTS,
        messages_posted=CLIENTS * MESSAGES_EACH,
        messages_stored=len(texts),
        seconds=round(seconds, 1),
        interleavings=switches,
        lost=CLIENTS * MESSAGES_EACH - len(texts),
    )
