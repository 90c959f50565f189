"""Recordings of the traffic a relay receives: the format, its writer and reader, redaction, sampling, and HAR import.

Both halves use it: the relay writes recordings (relay.capture.tap, hooked where a door admits a request and
where it answers it), the load engine reads them to replay (loadtest.models.replay). It therefore lives beside
relay.wire and relay.common rather than inside either half, and imports neither the relay server (relay.server,
relay.doors, relay.net, relay.upstream) nor the load engine (loadtest): only relay.wire, relay.common, the
standard library, msgpack and zstandard. Unlike relay.wire it does I/O (files, a writer thread), which is why it
is a package of its own and not part of the pure wire layer.

    format   the record layouts and file names of a recording (pure)
    redact   fields of documents replaced by a keyed hash of the same length (pure)
    writer   segments of zstd frames of msgpack records, rotation, the index, the writer thread
    reader   a recording (a folder or one segment) back as connections and requests with their answers
    tap      what the relay calls: per connection, a request at admission and its answer at the end; sampling
    har      a browser's HAR export (WebSocket frames in `_webSocketMessages`, HTTP POSTs) as records
"""
