"""The GraphQL door: `/graphql` as a Jina 3.x HTTP gateway serves it (`expose_graphql_endpoint=True`), for any Flow.

    seam.py       what the door needs of the relay (run a DataRequest through the Flow, the token check,
                  the counters): a narrow Protocol, and the only way the package reaches the relay
    adapter.py    that seam on the relay of today (relay.doors.http.HttpDoor's request lifecycle)
    documents.py  Documents <-> Jina's `StrawberryDocumentInput` / `StrawberryDocument` (no GraphQL library)
    schema.py     Jina's schema (its printed SDL, field for field), its scalars and resolvers (graphql-core)
    execution.py  parse and validate (cached), execute, Executor errors in `errors`, the answer's JSON
    door.py       GraphQL over HTTP: POST and GET `/graphql`, GraphiQL on GET without a query, assets
    graphiql.py   the GraphiQL page and its files, installed with the package (assets/, with their licenses)

Only door.py and adapter.py are imported by the relay; schema.py and execution.py import graphql-core (a
dependency of flowrelay), which the door imports when it is made, so that a relay installed without it still
starts (it logs the fix) and answers 503 with the fix on /graphql. Imports: relay.wire, relay.net.http_types,
relay.doors.static_assets, the standard library, orjson and graphql-core; never the server (adapter.py names
the HTTP door for types only).
"""
