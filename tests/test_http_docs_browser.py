"""The HTTP door's docs pages in a real browser: headless Chromium uses Swagger UI at `/docs` and Redoc at `/redoc`.

Debian's `chromium` and `chromedriver` (scripts/setup_system.sh installs both) are driven through selenium, with
networking features off and a fresh profile. On `/docs` (relay started with `-e upper`) the test does what a
person does: expands `POST /post`, clicks "Try it out", types a body, clicks "Execute", and reads a 200 answer
with the upper-cased text in it. `/redoc` must render the operations. On every page: no console error, and no
request to anything but the relay on 127.0.0.1 (the assets come from the installed package, not a CDN).
Screenshots are saved (their paths are printed).

Also the JavaScript of Jina's guide to third-party clients (`fetch(...)` from a page of another origin): it
reads the answer when the relay runs with `--cors`, and the browser blocks it without.

Without chromium, chromedriver or selenium the tests skip with the reason, except under CI (env CI set), where
that is a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import chromium, clear_logs, page_errors, requested_urls, screenshot, serve_page, wait_for
from http_door_harness import HttpRelay, serve_http

WAIT_S = 30.0
BODY = '{"data": [{"text": "hello from swagger"}], "execEndpoint": "/index"}'

# The guide's JavaScript example, as an async selenium script (the last argument is the callback).
_GUIDE_FETCH_JS = """
const done = arguments[arguments.length - 1];
fetch(arguments[0] + '/post', {
    method: 'POST',
    headers: {
        'Content-Type': 'application/json'
    },
    body: JSON.stringify({"data": [{"text": "hello world"}],"execEndpoint": "/search"})
}).then(response => response.json()).then(data => done({ok: true, data: data}))
  .catch(err => done({ok: false, error: String(err)}));
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium((1280, 1400), WAIT_S) as driver:
        yield driver


@pytest.fixture(scope="module")
def relay() -> Iterator[HttpRelay]:
    with serve_http("-e", "upper") as r:
        yield r


def _open(driver: Any, url: str) -> None:
    clear_logs(driver)
    driver.get(url)


def _wait_for(driver: Any, condition: Any, what: str) -> Any:
    return wait_for(driver, condition, what, WAIT_S)


def _screenshot(driver: Any, name: str) -> Path:
    return screenshot(driver, "flowrelay-http-docs", name, full_height=True)


def _only_the_relay(urls: list[str], relay: HttpRelay) -> None:
    outside = [u for u in urls if not u.startswith(relay.http_url + "/") and not u.startswith(("data:", "blob:"))]
    assert not outside, f"requests that left the relay: {outside}"


def test_swagger_ui_try_it_out(browser: Any, relay: HttpRelay) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    _open(driver, relay.http_url + "/docs")
    block = _wait_for(
        driver, lambda: driver.find_element(By.ID, "operations-Debug-post_post_post"), "the POST /post operation"
    )
    ops = driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    assert {e.get_attribute("data-path") for e in ops} >= {"/post", "/index", "/search", "/update", "/delete"}

    block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    _wait_for(driver, lambda: block.find_element(By.CSS_SELECTOR, ".try-out__btn"), "Try it out").click()
    editor = _wait_for(driver, lambda: block.find_element(By.CSS_SELECTOR, "textarea.body-param__text"), "the body")
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    editor.send_keys(BODY)
    block.find_element(By.CSS_SELECTOR, "button.execute").click()

    def answered() -> Any:
        status = block.find_element(By.CSS_SELECTOR, ".live-responses-table .response .response-col_status")
        body = block.find_element(By.CSS_SELECTOR, ".live-responses-table .response .microlight")
        return (status.text.strip(), body.text) if "HELLO" in body.text else None

    status, body = _wait_for(driver, answered, "the response to Execute")
    assert status == "200"
    answer = json.loads(body)
    assert answer["data"][0]["text"] == "HELLO FROM SWAGGER"
    assert answer["header"]["execEndpoint"] == "/index"
    curl_text = block.find_element(By.CSS_SELECTOR, ".curl-command").text
    assert f"{relay.http_url}/post" in curl_text

    _screenshot(driver, "swagger-ui-try-it-out.png")
    assert page_errors(driver) == []
    urls = requested_urls(driver)
    _only_the_relay(urls, relay)
    assert relay.http_url + "/docs-assets/swagger-ui/swagger-ui-bundle.js" in urls
    assert relay.http_url + "/openapi.json" in urls
    assert relay.http_url + "/post" in urls


def test_redoc_renders(browser: Any, relay: HttpRelay) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    _open(driver, relay.http_url + "/redoc")
    _wait_for(
        driver,
        lambda: "Post a data request to some endpoint" in driver.find_element(By.CSS_SELECTOR, ".api-content").text,
        "Redoc's operations",
    )
    text = driver.find_element(By.TAG_NAME, "body").text
    for expected in ("/Index", "/Search", "/Update", "/Delete", "execEndpoint", "targetExecutor", "parameters"):
        assert expected in text, expected
    _screenshot(driver, "redoc.png")
    assert page_errors(driver) == []
    urls = requested_urls(driver)
    _only_the_relay(urls, relay)
    assert relay.http_url + "/docs-assets/redoc/redoc.standalone.js" in urls


@pytest.fixture(scope="module")
def other_origin() -> Iterator[str]:
    """A page on another origin (another port of 127.0.0.1), to call the relay from."""
    with serve_page(b"<!DOCTYPE html><title>another origin</title><p>another origin</p>") as url:
        yield url


@pytest.mark.parametrize("cors", [True, False], ids=["cors", "no-cors"])
def test_guide_fetch_from_another_origin(browser: Any, other_origin: str, cors: bool) -> None:
    with serve_http("-e", "upper", *(["--cors"] if cors else [])) as relay:
        _open(browser, other_origin)
        result = browser.execute_async_script(_GUIDE_FETCH_JS, relay.http_url)
    if cors:
        assert result["ok"], result
        assert result["data"]["data"][0]["text"] == "HELLO WORLD"
        assert result["data"]["header"]["execEndpoint"] == "/search"
    else:
        assert not result["ok"]
        assert "Failed to fetch" in result["error"]
