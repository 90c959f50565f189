"""The ways into the relay: WebSocket, HTTP (with its docs pages and OpenAPI document) and gRPC. Each decodes its
own framing and hands requests to the one lifecycle in relay.gateway."""
