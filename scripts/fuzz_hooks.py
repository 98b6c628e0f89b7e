"""schemathesis hooks for scripts/fuzz-api: send tarball uploads (application/gzip) as
raw bytes, and give half of them the gzip magic so that the upload handler gets past its
first check and stores, counts and completes uploads too."""

import schemathesis
from schemathesis.transport.requests import binary_serializer


def gzip_upload(ctx, value):
    data = binary_serializer(ctx, value)["data"]
    if isinstance(data, str):
        data = data.encode()
    if not data or data[0] % 2 == 0:
        data = b"\x1f\x8b" + data
    return data


schemathesis.serializer("application/gzip")(gzip_upload)
