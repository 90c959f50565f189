"""GraphiQL at `GET /graphql`, from files installed with the package: nothing is fetched from elsewhere.

Jina's `/graphql` page (strawberry's) loads React and GraphiQL from a CDN, which a relay on an offline machine
cannot reach. This page is GraphiQL 3 with React 18, from `assets/` (their npm releases, with their licenses:
assets/README.md), served under `/graphql-assets/`. Its start-up is a script of its own (`init.js`), so the
page needs no inline script, and it is sent with a Content-Security-Policy that allows nothing but this origin
(plus inline styles and `data:` images, which GraphiQL uses). A `?token=` on the page's URL is passed on to its
requests, for a relay started with `--auth-token` (GraphiQL's header editor can send `Authorization` too).

Imports the standard library and relay.doors.static_assets.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from relay.doors.static_assets import CSS, JS, TEXT, Asset, html_page, load_asset

ASSET_PREFIX = "/graphql-assets/"
ASSETS_DIR = Path(__file__).parent / "assets"

# URL under /graphql-assets/ -> (file in assets/, content type)
ASSETS: dict[str, tuple[str, str]] = {
    "graphiql.min.js": ("graphiql.min.js", JS),
    "graphiql.min.css": ("graphiql.min.css", CSS),
    "react.production.min.js": ("react.production.min.js", JS),
    "react-dom.production.min.js": ("react-dom.production.min.js", JS),
    "LICENSE-graphiql": ("LICENSE-graphiql", TEXT),
    "LICENSE-react": ("LICENSE-react", TEXT),
    "LICENSE-react-dom": ("LICENSE-react-dom", TEXT),
    "README.md": ("README.md", "text/markdown; charset=utf-8"),
}
# The source map is not shipped: its comment goes, so that a browser's developer tools do not ask for it.
PATCHES: dict[str, tuple[tuple[bytes, bytes], ...]] = {
    "graphiql.min.js": ((b"//# sourceMappingURL=index.umd.js.map", b""),),
}

# The seed page's example, shown when the page is first opened.
DEFAULT_QUERY = """\
# Jina's GraphQL API, for the Flow behind this relay:
# docs(data, targetExecutor, parameters, execEndpoint)
# answers the fields you select, and only those.
mutation {
  docs(data: {text: "abcd"}) {
    id
    text
    matches {
      embedding
    }
  }
}
"""

INIT_JS = f"""\
(function () {{
  var url = new URL("graphql", document.baseURI);
  var token = new URLSearchParams(window.location.search).get("token");
  if (token) {{
    url.searchParams.set("token", token);
  }}
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, {{
    fetcher: GraphiQL.createFetcher({{ url: url.href }}),
    defaultEditorToolbarOpen: true,
    defaultQuery: {json.dumps(DEFAULT_QUERY)},
  }}));
}})();
""".encode()
GENERATED_ASSETS: dict[str, tuple[bytes, str]] = {"init.js": (INIT_JS, JS)}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)


@functools.cache
def asset(name: str) -> Asset | None:
    """The file served at ASSET_PREFIX + name, or None when there is none."""
    return load_asset(name, ASSETS_DIR, ASSETS, GENERATED_ASSETS, PATCHES)


def page(title: str) -> bytes:
    head = """<link rel="icon" href="data:,">
<link rel="stylesheet" href="graphql-assets/graphiql.min.css">
<style>body { margin: 0; height: 100vh; overflow: hidden; } #graphiql { height: 100vh; }</style>"""
    body = """<div id="graphiql">Loading GraphiQL...</div>
<script src="graphql-assets/react.production.min.js"></script>
<script src="graphql-assets/react-dom.production.min.js"></script>
<script src="graphql-assets/graphiql.min.js"></script>
<script src="graphql-assets/init.js"></script>"""
    return html_page(f"{title} - GraphiQL", head, body)
