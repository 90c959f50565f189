"""The relay in front of real Flows: links to an upstream gateway (WebSocket or gRPC), the pool they form, the
backend that answers clients from it, and the mirror that copies traffic to a shadow Flow."""
