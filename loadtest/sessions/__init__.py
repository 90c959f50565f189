"""Load sessions, one kind per protocol (WebSocket, gRPC, HTTP), all driven through the same interface."""
