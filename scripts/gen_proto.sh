#!/usr/bin/env bash
# Regenerates relay/wire/proto/*_pb2.py (and jina_pb2_grpc.py, the gRPC stubs and servicers) from the
# .proto files (needs the dev extra: grpcio-tools).
# protoc writes `import docarray_pb2` / `import jina_pb2`; the package needs the relative form.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m grpc_tools.protoc -I relay/wire/proto --python_out=relay/wire/proto --pyi_out=relay/wire/proto \
    relay/wire/proto/docarray.proto relay/wire/proto/jina.proto
"$py" -m grpc_tools.protoc -I relay/wire/proto --grpc_python_out=relay/wire/proto relay/wire/proto/jina.proto
sed -i 's/^import docarray_pb2 as docarray__pb2/from . import docarray_pb2 as docarray__pb2/' relay/wire/proto/jina_pb2.py
sed -i 's/^import docarray_pb2 as _docarray_pb2/from . import docarray_pb2 as _docarray_pb2/' relay/wire/proto/jina_pb2.pyi
sed -i 's/^import jina_pb2 as jina__pb2/from . import jina_pb2 as jina__pb2/' relay/wire/proto/jina_pb2_grpc.py
