"""Interactive API docs without the network: Swagger UI at `/docs`, Redoc at `/redoc`, assets from a package.

A Jina (FastAPI) gateway's `/docs` and `/redoc` pages load Swagger UI and Redoc from a CDN, which a relay on an
offline machine cannot reach. These pages have the same look and content, but every script, style sheet and
icon comes from `/docs-assets/...`, served from the files of the `drf-spectacular-sidecar` package (a
self-contained distribution of `swagger-ui-dist` and Redoc, released with each of their versions; its
`__init__` imports Django, so it is located, never imported). It is the `flowrelay[docs]` extra: without it
`assets_installed()` is False and the door answers the pages with 503 and that hint. Only the files listed in
`ASSETS` are served.

Pages send a Content-Security-Policy that allows nothing but this origin (plus inline styles and `data:`/`blob:`
URLs, which both UIs use), so a page cannot fetch anything from elsewhere even by mistake. The one URL elsewhere
that a bundle would load (Redoc's badge logo, from Redocly's CDN) is replaced as the bundle is read (`PATCHES`).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from relay.doors.static_assets import CSS, JS, JSON, TEXT, Asset, html_page, load_asset

ASSETS_PACKAGE = "drf_spectacular_sidecar"
ASSET_PREFIX = "/docs-assets/"

# URL under /docs-assets/ -> (file under the package's static/drf_spectacular_sidecar/, content type)
ASSETS: dict[str, tuple[str, str]] = {
    "swagger-ui/swagger-ui-bundle.js": ("swagger-ui-dist/swagger-ui-bundle.js", JS),
    "swagger-ui/swagger-ui-bundle.js.map": ("swagger-ui-dist/swagger-ui-bundle.js.map", JSON),
    "swagger-ui/swagger-ui.css": ("swagger-ui-dist/swagger-ui.css", CSS),
    "swagger-ui/swagger-ui.css.map": ("swagger-ui-dist/swagger-ui.css.map", JSON),
    "swagger-ui/favicon-32x32.png": ("swagger-ui-dist/favicon-32x32.png", "image/png"),
    "swagger-ui/LICENSE": ("swagger-ui-dist/LICENSE", TEXT),
    "redoc/redoc.standalone.js": ("redoc/bundles/redoc.standalone.js", JS),
    "redoc/redoc.standalone.js.map": ("redoc/bundles/redoc.standalone.js.map", JSON),
    "redoc/LICENSE": ("redoc/LICENSE", TEXT),
}

# Swagger UI's start-up, a file of its own so that the page needs no inline script. The spec URL is relative
# to the page, so the docs also work behind a reverse proxy that adds a path prefix.
SWAGGER_INIT_JS = b"""\
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
"""
GENERATED_ASSETS: dict[str, tuple[bytes, str]] = {"swagger-ui/init.js": (SWAGGER_INIT_JS, JS)}

# Byte replacements made when an asset is loaded. Redoc's "API docs by Redocly" badge loads its logo from a CDN
# (the only resource either bundle fetches from elsewhere); it gets an inline blank image instead.
_BLANK_SVG = b"data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/>"
PATCHES: dict[str, tuple[tuple[bytes, bytes], ...]] = {
    "redoc/redoc.standalone.js": ((b'"https://cdn.redoc.ly/redoc/logo-mini.svg"', b'"' + _BLANK_SVG + b'"'),),
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'self'"
)


def static_root() -> Path | None:
    """The package's static folder, found without importing the package (its __init__ imports Django)."""
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "static" / ASSETS_PACKAGE
    return root if root.is_dir() else None


@functools.cache
def asset(name: str) -> Asset | None:
    """The asset served at ASSET_PREFIX + name, or None if there is no such asset (or it is not installed)."""
    return load_asset(name, static_root(), ASSETS, GENERATED_ASSETS, PATCHES)


def assets_installed() -> bool:
    return static_root() is not None


def swagger_ui_page(title: str) -> bytes:
    head = """<link rel="stylesheet" type="text/css" href="docs-assets/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="docs-assets/swagger-ui/favicon-32x32.png">"""
    body = """<div id="swagger-ui"></div>
<script src="docs-assets/swagger-ui/swagger-ui-bundle.js"></script>
<script src="docs-assets/swagger-ui/init.js"></script>"""
    return html_page(f"{title} - Swagger UI", head, body)


def redoc_page(title: str) -> bytes:
    head = """<link rel="icon" type="image/png" href="docs-assets/swagger-ui/favicon-32x32.png">
<style>body { margin: 0; padding: 0; }</style>"""
    body = """<noscript>ReDoc requires Javascript to function. Please enable it to browse the documentation.</noscript>
<redoc spec-url="openapi.json"></redoc>
<script src="docs-assets/redoc/redoc.standalone.js"></script>"""
    return html_page(f"{title} - ReDoc", head, body)
