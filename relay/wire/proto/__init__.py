"""Generated protobuf modules for the bytes subprotocol (see scripts/gen_proto.sh)."""
