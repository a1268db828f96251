"""schemathesis hooks for tests/fuzz/schemathesis.sh (SCHEMATHESIS_HOOKS).

A tus PATCH body is `application/offset+octet-stream` (tus 1.0.0): raw
bytes, sent as schemathesis sends `application/octet-stream`.
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
