"""GraphiQL at `GET /graphql` in a real browser: headless Chromium renders it and runs the seed page's mutation.

Jina's page loads React and GraphiQL from a CDN; the relay's comes from files installed with the package. The
test does what a person does: opens `/graphql` on a relay started with `-e upper`, waits for GraphiQL and its
schema (the introspection request), clicks the run button on the default query (the seed page's mutation) and
reads `ABCD` in the result pane. No console error, no request to anything but the relay on 127.0.0.1. With
`--auth-token`, `/graphql?token=...` runs requests with the token. Screenshots are saved (their paths printed).

Without chromium, chromedriver or selenium the tests skip with the reason, except under CI (env CI set).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser_harness import chromium, clear_logs, page_errors, requested_urls, screenshot, wait_for
from http_door_harness import HttpRelay, serve_http

WAIT_S = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium((1280, 900), WAIT_S) as driver:
        yield driver


def _wait_for(driver: Any, condition: Any, what: str) -> Any:
    return wait_for(driver, condition, what, WAIT_S)


def _run_the_default_query(driver: Any, page_url: str) -> str:
    """Open GraphiQL, wait for its schema, run the default query; the result pane's text."""
    from selenium.webdriver.common.by import By

    clear_logs(driver)
    driver.get(page_url)
    _wait_for(driver, lambda: driver.find_element(By.CSS_SELECTOR, ".graphiql-container"), "GraphiQL")
    _wait_for(driver, lambda: "docs(data:" in driver.find_element(By.CSS_SELECTOR, ".graphiql-query-editor").text,
              "the default query in the editor")
    # The schema is in once the documentation explorer can show it.
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Show Documentation Explorer']").click()
    _wait_for(driver, lambda: "Mutation" in driver.find_element(By.CSS_SELECTOR, ".graphiql-doc-explorer").text,
              "the schema in the documentation explorer")
    driver.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
    return _wait_for(driver, lambda: (t := driver.find_element(By.CSS_SELECTOR, ".graphiql-response").text)
                     and "ABCD" in t and t, "the answer in the result pane")


def _only_the_relay(urls: list[str], relay: HttpRelay) -> None:
    outside = [u for u in urls if not u.startswith(relay.http_url + "/") and not u.startswith(("data:", "blob:"))]
    assert not outside, f"requests that left the relay: {outside}"


def test_graphiql_runs_the_seed_pages_mutation(browser: Any) -> None:
    with serve_http("-e", "upper") as relay:
        result = _run_the_default_query(browser, relay.http_url + "/graphql")
        screenshot(browser, "flowrelay-graphiql", "graphiql.png")
        errors = page_errors(browser)
        urls = requested_urls(browser)
    assert '"text": "ABCD"' in result and '"matches": null' in result
    assert errors == []
    _only_the_relay(urls, relay)
    for asset in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "init.js"):
        assert f"{relay.http_url}/graphql-assets/{asset}" in urls
    assert urls.count(relay.http_url + "/graphql") >= 2  # the introspection and the mutation


def test_the_pages_token_goes_with_its_requests(browser: Any) -> None:
    with serve_http("-e", "upper", "--auth-token", "s3cret") as relay:
        result = _run_the_default_query(browser, relay.http_url + "/graphql?token=s3cret")
        errors = page_errors(browser)
    assert '"text": "ABCD"' in result and errors == []
