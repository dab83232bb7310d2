"""`/metrics` scraped from the real binary and parsed by the Prometheus project's own parser
(prometheus-client's OpenMetrics parser): every series parses, counters move, and an SFU
participant shows while a LiveKit Python SDK client is connected."""

import asyncio

import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from convene_server import wait_for
from media_helpers import connect, enter_and_join, metrics_server, scrape


@pytest.fixture
def server():
    s = metrics_server()
    yield s
    s.stop()


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_parse_and_show_an_sfu_participant_while_a_client_is_connected(server):
    before = scrape(server)
    assert value(before, "convene_sfu_participants") == 0
    assert value(before, "convene_meetings", status="live") == 0

    # The main address answers only with the API key.
    assert requests.get(f"{server.base}/metrics", timeout=10).status_code == 401
    with_key = server.admin("GET", "/metrics")
    assert with_key.status_code == 200
    assert list(text_string_to_metric_families(with_key.text))

    meeting = server.admin("POST", "/v1/meetings", json={"name": "Scraped", "policy": "open"}).json()
    join = enter_and_join(server, meeting, "host", "host")

    async def main():
        room = await connect(join)
        try:
            samples = {}

            def participant_seen():
                samples.update(scrape(server))
                return value(samples, "convene_sfu_participants") == 1

            await wait_for(participant_seen, 15, "one SFU participant in /metrics")
            assert value(samples, "convene_sfu_rooms") == 1
            assert value(samples, "convene_people", state="joined") == 1
            assert value(samples, "convene_sfu_datagrams_sent_total", transport="udp") > 0
            assert value(
                samples, "convene_http_requests_total", route="/v1/meetings/{meeting_id}/join", method="POST", status="200"
            ) == 1
            assert value(samples, "convene_http_request_duration_seconds_count", route="/v1/meetings", method="POST") == 1
        finally:
            await room.disconnect()

        def participant_gone():
            return value(scrape(server), "convene_sfu_participants") == 0

        await wait_for(participant_gone, 15, "the SFU participant gone from /metrics")

    asyncio.run(main())
