#!/usr/bin/env bash
# Regenerates relay/wire/proto/*_pb2.py (and jina_pb2_grpc.py, the gRPC stubs and servicers) from the
# .proto files (needs the dev extra: grpcio-tools). docarray_v2.proto and jina_v2.proto are the
# docarray >= 0.30 documents and envelope (packages docarray_v2, jina_v2), used by proto_v2_codec.
# protoc writes `import docarray_pb2` / `import jina_pb2` / ...; the package needs the relative form.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
"$py" -m grpc_tools.protoc -I relay/wire/proto --python_out=relay/wire/proto --pyi_out=relay/wire/proto \
    relay/wire/proto/docarray.proto relay/wire/proto/jina.proto \
    relay/wire/proto/docarray_v2.proto relay/wire/proto/jina_v2.proto
"$py" -m grpc_tools.protoc -I relay/wire/proto --grpc_python_out=relay/wire/proto relay/wire/proto/jina.proto
sed -i 's/^import docarray_pb2 as docarray__pb2/from . import docarray_pb2 as docarray__pb2/' relay/wire/proto/jina_pb2.py
sed -i 's/^import docarray_pb2 as _docarray_pb2/from . import docarray_pb2 as _docarray_pb2/' relay/wire/proto/jina_pb2.pyi
sed -i 's/^import jina_pb2 as jina__pb2/from . import jina_pb2 as jina__pb2/' relay/wire/proto/jina_pb2_grpc.py
sed -i -e 's/^import jina_pb2 as jina__pb2/from . import jina_pb2 as jina__pb2/' \
    -e 's/^import docarray_v2_pb2 as docarray__v2__pb2/from . import docarray_v2_pb2 as docarray__v2__pb2/' \
    relay/wire/proto/jina_v2_pb2.py
sed -i -e 's/^import jina_pb2 as _jina_pb2/from . import jina_pb2 as _jina_pb2/' \
    -e 's/^import docarray_v2_pb2 as _docarray_v2_pb2/from . import docarray_v2_pb2 as _docarray_v2_pb2/' \
    relay/wire/proto/jina_v2_pb2.pyi
