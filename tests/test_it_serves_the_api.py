"""The API's figures equal what the test computes from the tuples it stored through the real cloud."""

import subprocess
import sys

import pytest
import yaml
from django.conf import settings as django_settings

from cloud_app.postal import STATES, locate
from cloud_app.serializers import MAX_RECENT_LIMIT
from tests.conftest import EDGE_ID, EDGE_SECRET, ROOT, free_port, make_rows, store_through_cloud
from fogwire import protocol as wire

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # what a browser's address bar asks
pytestmark = pytest.mark.engines  # the reads over the store's shards, on one Redis and on a cluster


@pytest.fixture
def stored(cloud_settings, cloud):
    rows = make_rows(400, household="api") + make_rows(100, household="more", start_id=400, power=900.0)
    store_through_cloud(cloud, rows)
    cloud.request(wire.heartbeat(EDGE_ID, EDGE_SECRET, backlog=17), data=False)
    return rows


def test_it_gives_each_states_households_power_energy_and_cost(client, stored, settings):
    expected = {state: [set(), 0.0, 0] for state in STATES}
    for _, household, _, _, average, _ in stored:
        row = expected[locate(household)[1]]
        row[0].add(household)
        row[1] += average
        row[2] += 1
    body = client.get("/api/states/").json()
    assert sorted(figures["state"] for figures in body) == sorted(STATES)
    for figures in body:
        households, total, count = expected[figures["state"]]
        mean = total / count if count else 0.0
        assert figures["households"] == len(households)
        assert figures["tuples"] == count
        assert figures["mean_power_w"] == pytest.approx(mean, abs=1e-3)
        assert figures["annual_kwh"] == pytest.approx(mean * 8.76, abs=1e-2)
        assert figures["annual_cost_eur"] == pytest.approx(mean * 8.76 * settings.FOG_PRICE_EUR_PER_KWH, abs=0.01)


def test_it_pages_households_with_their_latest_window(client, stored):
    first = client.get("/api/households/?page=1&page_size=6").json()
    second = client.get(first["next"]).json()
    assert first["count"] == 10 and len(first["results"]) == 6 and len(second["results"]) == 4
    assert second["next"] is None and second["previous"]
    rows = {r["household"]: r for r in first["results"] + second["results"]}
    latest = max((r for r in stored if r[1] == "api-3"), key=lambda r: r[2])
    assert rows["api-3"]["window_start"] == latest[2]
    assert rows["api-3"]["power_w"] == pytest.approx(latest[4])
    assert (rows["api-3"]["postal_code"], rows["api-3"]["state"]) == locate("api-3")


def test_it_answers_200_or_400_to_any_query_string(client, stored):
    from tests.corpus import API_QUERIES

    for query, status in API_QUERIES.items():
        assert client.get(query).status_code == status, query
    odd = ["0", "-0", "+1", " 1", "1_000", "٣", "1e2", "0x10", "inf", "nan", "", "9" * 19, "9" * 20, "%FF", "'", "[]"]
    for path in ("/api/households/", "/api/tuples/recent/", "/api/states/", "/api/edges/"):
        for name in ("page", "page_size", "limit", "x"):
            for value in odd:
                response = client.get(f"{path}?{name}={value}")
                assert response.status_code in (200, 400), (path, name, value, response.status_code)
                if response.status_code == 400:
                    assert name in response.json(), (path, name, value)  # the error names the parameter


def test_it_lists_edges_with_link_backlog_and_rate(client, stored):
    (edge,) = client.get("/api/edges/").json()
    assert (edge["edge"], edge["connected"], edge["backlog"], edge["acked"]) == (EDGE_ID, True, 17, 500)
    assert edge["acked_per_second"] >= 0


def test_it_lists_the_latest_tuples_newest_first(client, stored):
    recent = client.get("/api/tuples/recent/?limit=5").json()
    assert [t["id"] for t in recent] == [499, 498, 497, 496, 495]


@pytest.mark.parametrize("query", ["page=0", "page=-1", "page=x", "page=1.0", "page_size=0", "page_size=501",
                                   "page_size=", "page=1000000001", "page=" + "9" * 21])
def test_it_refuses_a_bad_page_with_a_400_naming_the_parameter(client, stored, query):
    response = client.get(f"/api/households/?{query}")
    assert response.status_code == 400
    assert set(response.json()) == {query.split("=")[0]}


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=ten", "limit=-1", "limit=+3", "limit=" + "9" * 21])
def test_it_refuses_a_bad_limit_with_a_400_naming_it_and_its_range(client, stored, query):
    response = client.get(f"/api/tuples/recent/?{query}")
    assert response.status_code == 400
    assert response.json() == {"limit": [f"a whole number from 1 to {MAX_RECENT_LIMIT}, in digits, is required."]}


@pytest.mark.parametrize("query", ["format=xml", "format=api", "unknown=1"])
def test_it_answers_a_query_string_it_does_not_use_with_its_json(client, stored, query):
    response = client.get(f"/api/households/?{query}")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert len(response.json()["results"]) == 10


@pytest.mark.parametrize("path", ["/api/states/", "/api/power/", "/api/edges/", "/api/households/",
                                  "/api/tuples/recent/", "/api/households/x/"])
def test_it_answers_more_query_parameters_than_it_reads_with_its_json_400(client, stored, path):
    response = client.get(path, {f"p{i}": "1" for i in range(django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1)})
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["detail"] == f"more than {django_settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} query parameters"


def test_it_answers_a_page_past_the_last_with_no_results(client, stored):
    body = client.get("/api/households/?page=1000000000&page_size=6").json()
    assert (body["count"], body["results"], body["next"]) == (10, [], None)
    assert client.get(body["previous"]).json()["results"]  # the last page, which has some


def test_it_is_read_only_for_anonymous_users(client, stored):
    assert client.post("/api/states/", {}).status_code == 405
    assert client.delete("/api/edges/").status_code == 405


def test_it_publishes_a_valid_openapi_schema_listing_every_endpoint(tmp_path):
    target = tmp_path / "schema.yaml"
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "spectacular", "--validate", "--fail-on-warn",
                             "--file", str(target)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    paths = yaml.safe_load(target.read_text())["paths"]
    assert {"/api/states/", "/api/households/", "/api/edges/", "/api/tuples/recent/", "/api/power/",
            "/api/households/{household}/", "/api/states/{state}/households/",
            "/api/edges/{edge}/history/"} <= set(paths)
    bounds = {(path, p["name"]): (p["schema"].get("minimum"), p["schema"].get("maximum"))
              for path, item in paths.items() for p in item["get"].get("parameters", []) if p["in"] == "query"}
    paging = {"page": (1, 1_000_000_000), "page_size": (1, 500)}
    assert bounds == {**{("/api/households/", name): b for name, b in paging.items()},
                      **{("/api/states/{state}/households/", name): b for name, b in paging.items()},
                      ("/api/tuples/recent/", "limit"): (1, 200)}
    for path in {path for path, _ in bounds}:
        assert {"200", "400"} <= set(paths[path]["get"]["responses"]), path
    for path in ("/api/households/{household}/", "/api/states/{state}/households/", "/api/edges/{edge}/history/"):
        assert "404" in paths[path]["get"]["responses"], path


def test_it_serves_the_api_docs_without_any_cdn(client):
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page


def test_it_exposes_edge_and_cloud_metrics(client, stored, db):
    from edge_app.models import EdgeStatus

    EdgeStatus.objects.create(edge_id="edge-m", readings=12, late=2, malformed=1, acked=9, connected=False)
    text = client.get("/metrics").content.decode()
    assert 'fog_edge_readings_total{edge="edge-m"} 12.0' in text
    assert 'fog_edge_late_total{edge="edge-m"} 2.0' in text
    assert 'fog_edge_link_up{edge="edge-m"} 0.0' in text
    assert 'fog_edge_tuples{status="pending"}' in text
    assert "fog_cloud_tuples_total 500.0" in text and "fog_cloud_store_up 1.0" in text
    assert f'fog_cloud_edge_backlog{{edge="{EDGE_ID}"}} 17.0' in text


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])  # a cluster client connects as it is made
def test_it_says_in_the_metrics_that_the_cloud_store_is_down_and_still_gives_the_edges_figures(client, db, settings,
                                                                                             scheme):
    from edge_app.models import EdgeStatus

    EdgeStatus.objects.create(edge_id="edge-m", readings=12)
    settings.FOG_CLOUD_REDIS_URL = f"{scheme}://127.0.0.1:{free_port()}/0"  # nothing listens there
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert "fog_cloud_store_up 0.0" in text and 'fog_edge_readings_total{edge="edge-m"} 12.0' in text


def test_it_exposes_metrics_that_prometheus_own_checker_accepts(client, stored, db):
    """`promtool check metrics` (Prometheus's own parser and linter, from Debian's prometheus package, which
    `make test` installs) reads both halves of /metrics without an error or a lint complaint."""
    import subprocess

    from edge_app.models import EdgeStatus

    EdgeStatus.objects.create(edge_id="edge-m", readings=12, late=2, acked=9, sent_again=3, connected=True)
    text = client.get("/metrics").content
    assert b"fog_edge_sent_again_total" in text and b"fog_cloud_tuples_total" in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip(), (checked.stdout + checked.stderr).decode()


def test_it_reads_through_the_reader_a_view_is_given(stored, redis_client, cloud_prefix, rf):
    from cloud_app.api import StatesView
    from cloud_app.reader import CloudReader

    view = StatesView.as_view(readers=lambda: CloudReader(redis_client, cloud_prefix, price_eur_per_kwh=1.0))
    figures = view(rf.get("/api/states/")).data
    assert sum(f["tuples"] for f in figures) == len(stored)
    assert all(f["annual_cost_eur"] == pytest.approx(f["annual_kwh"], abs=0.01) for f in figures)


@pytest.mark.parametrize("path", ["/api/households/a%0Ab/", "/api/states/B%2FY/households/", "/api/nothing/",
                                  "/api/households/" + "a/" * 800])  # no household id holds a '/'
def test_it_answers_an_api_path_no_route_matches_with_a_json_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert "detail" in response.json()
    assert client.get(path, HTTP_ACCEPT=BROWSER).status_code == 404  # as DRF's page of the API, where it is one


@pytest.mark.parametrize("path", ["/api/households/?page=2&page_size=2", "/api/states/BY/households/"])
def test_it_shows_a_browser_the_paged_lists_as_the_api_page(client, stored, path):
    """A browser asks for HTML, and gets DRF's page of the API, the same figures inside."""
    response = client.get(path, HTTP_ACCEPT=BROWSER)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    assert client.get(path).json()["results"][0]["household"] in response.content.decode()


def test_it_pages_households_of_many_shards_in_one_name_order(redis_url, cloud_prefix, cloud_reader):
    """Households of edges in different shards: every page, at any offset, is the next slice of one sorted list."""
    import asyncio

    from cloud_app.engine import connect_async
    from cloud_app.keys import shard_of
    from cloud_app.store import CloudStore

    edges = [f"edge-{n}" for n in range(6)]
    assert len({shard_of(edge) for edge in edges}) > 3  # the households land in several shards

    async def fill():
        client = connect_async(redis_url)
        try:
            store = CloudStore(client, cloud_prefix)
            for n, edge in enumerate(edges):
                await store.store(edge, make_rows(9, household=f"h{n * 7 % 5}{n}", start_id=0))
        finally:
            await client.aclose()

    asyncio.run(fill())
    names = sorted(row["household"] for row in cloud_reader.households(0, 1000)[1])
    assert len(names) == 30 and cloud_reader.household_count() == 30
    for offset in range(0, 31):
        total, page = cloud_reader.households(offset, 7)
        assert total == 30 and [row["household"] for row in page] == names[offset:offset + 7], offset
