"""The HTTP door's models, validation and OpenAPI document: types (the type system), models (Jina's), document."""
