"""moto_server, with ranged GETs that read only their range.

moto (5.x) answers a ranged GET by reading the whole object into memory and slicing it: on a
300 MB object every GET costs about 0.25 s of moto's CPU whatever its length, and moto serves
them one at a time. S3 does not: a ranged GET costs S3 a first-byte latency, not the object's
size. A reader that asks S3 for many small ranges (the chunks a job needs) would be measured
against moto's artefact, not against its link, and the CPU moto burns would be taken from the
decoder on a small machine.

This launcher changes only that: a GET with a `Range` header reads just the requested bytes
from moto's copy of the object. Everything else (the headers, `If-Match`, 206/416, checksums,
versions) is moto's own code, unchanged. Usage is moto_server's: `moto_server.py -H host -p port`.
"""

import sys
import threading

from moto.s3.responses import S3Response

_lazy = threading.local()


class _Slices:
    """An object's bytes, read from moto's buffer only where sliced (moto's range handler
    takes `len()` and one slice)."""

    def __init__(self, key):
        self._key = key

    def __len__(self):
        return self._key.size

    def __bool__(self):
        return self._key.size > 0

    def __getitem__(self, s):
        start, stop, _ = s.indices(self._key.size)
        with self._key.lock:
            self._key._value_buffer.seek(start)
            return self._key._value_buffer.read(max(0, stop - start))

    def whole(self):
        return self._key.value


class _KeyView:
    """A key whose `value` is read lazily; every other attribute is the key's."""

    def __init__(self, key):
        self._key = key

    def __getattr__(self, name):
        return getattr(self._key, name)

    @property
    def value(self):
        return _Slices(self._key)


_get_key = S3Response._get_key
_get_object = S3Response.get_object
_key_response = S3Response.key_response


def get_key(self, *args, **kwargs):
    key, not_modified = _get_key(self, *args, **kwargs)
    if getattr(_lazy, "on", False):
        key = _KeyView(key)
    return key, not_modified


def get_object(self):
    _lazy.on = bool(self.headers.get("range"))
    try:
        return _get_object(self)
    finally:
        _lazy.on = False


def key_response(self, request, full_url, headers):
    status, out_headers, body = _key_response(self, request, full_url, headers)
    if isinstance(body, _Slices):
        # A range moto answers with the whole object (several ranges, one it cannot parse).
        body = body.whole()
    return status, out_headers, body


S3Response._get_key = get_key
S3Response.get_object = get_object
S3Response.key_response = key_response

if __name__ == "__main__":
    from moto.server import main

    sys.exit(main(sys.argv[1:]))
