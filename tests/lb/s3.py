"""A minimal S3 client (SigV4, path-style, plain HTTP), Python stdlib only.

Just what tests/lb needs to look at the bucket behind the service: list
objects and unfinished multipart uploads under a prefix, HEAD/GET/DELETE an
object, start and abort a multipart upload (for the leftover checker's own
self-test). No PyPI package is needed on a fresh CI machine.
"""

import datetime
import hashlib
import hmac
import http.client
import urllib.parse
import xml.etree.ElementTree as ET

_SAFE = "-_.~"


def _q(text, safe=_SAFE):
    return urllib.parse.quote(text, safe=safe)


def _strip(tag):
    return tag.rsplit("}", 1)[-1]


def _children(elem, name):
    return [child for child in elem if _strip(child.tag) == name]


def _text(elem, name):
    for child in elem:
        if _strip(child.tag) == name:
            return child.text or ""
    return None


class S3Error(Exception):
    pass


class S3:
    def __init__(self, endpoint, bucket, region, access_key, secret_key, timeout=30):
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme != "http":
            raise ValueError(f"only http:// endpoints are supported, not {endpoint!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.netloc = parsed.netloc
        self.bucket = bucket
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.timeout = timeout

    def _sign(self, method, path, query, payload_hash):
        now = datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = now.strftime("%Y%m%d")
        headers = {
            "host": self.netloc,
            "x-amz-content-sha256": payload_hash,
            "x-amz-date": amz_date,
        }
        names = sorted(headers)
        canonical = "\n".join(
            [
                method,
                path,
                query,
                "".join(f"{name}:{headers[name]}\n" for name in names),
                ";".join(names),
                payload_hash,
            ]
        )
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical.encode()).hexdigest(),
            ]
        )
        key = ("AWS4" + self.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return headers

    def request(self, method, key="", query=None, body=b""):
        """One signed request; answers (status, headers, connection, response)
        with the body unread: the caller reads or closes it."""
        path = "/" + _q(self.bucket)
        if key:
            path += "/" + _q(key, safe=_SAFE + "/")
        pairs = sorted((query or {}).items())
        query_text = "&".join(f"{_q(k)}={_q(v)}" for k, v in pairs)
        headers = self._sign(method, path, query_text, hashlib.sha256(body).hexdigest())
        if body:
            headers["content-length"] = str(len(body))
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        conn.request(method, path + ("?" + query_text if query_text else ""), body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response, conn

    def _call(self, method, key="", query=None, body=b"", ok=(200,)):
        status, response, conn = self.request(method, key, query, body)
        try:
            data = response.read()
        finally:
            conn.close()
        if status not in ok:
            raise S3Error(f"{method} {key or self.bucket} {query or ''}: HTTP {status}: {data[:300]!r}")
        return status, data

    def list_parcels(self, prefix):
        """{key: size} of the parcels under prefix: every object but the
        marks of used tokens (`<prefix>.tokens/<jti>`, docs/reliability.md,
        "Exactly once across a failover"), which a lifecycle rule expires."""
        marks = prefix + ".tokens/"
        return {key: size for key, size in self.list_objects(prefix).items() if not key.startswith(marks)}

    def list_objects(self, prefix):
        """{key: size} of every object under prefix."""
        objects, token = {}, None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            _, data = self._call("GET", query=query)
            root = ET.fromstring(data)
            for item in _children(root, "Contents"):
                objects[_text(item, "Key")] = int(_text(item, "Size"))
            if _text(root, "IsTruncated") != "true":
                return objects
            token = _text(root, "NextContinuationToken")

    def list_uploads(self, prefix):
        """[(key, upload id, initiated)] of the unfinished multipart uploads
        under prefix."""
        uploads, markers = [], {}
        while True:
            query = {"uploads": "", "prefix": prefix, **markers}
            _, data = self._call("GET", query=query)
            root = ET.fromstring(data)
            for item in _children(root, "Upload"):
                uploads.append((_text(item, "Key"), _text(item, "UploadId"), _text(item, "Initiated")))
            if _text(root, "IsTruncated") != "true":
                return uploads
            markers = {
                "key-marker": _text(root, "NextKeyMarker") or "",
                "upload-id-marker": _text(root, "NextUploadIdMarker") or "",
            }

    def head(self, key):
        """The object's size, or None when it does not exist."""
        status, response, conn = self.request("HEAD", key)
        try:
            response.read()
        finally:
            conn.close()
        if status == 404:
            return None
        if status != 200:
            raise S3Error(f"HEAD {key}: HTTP {status}")
        return int(response.getheader("Content-Length"))

    def sha256_of(self, key):
        """(size, SHA-256 hex) of the object's bytes, streamed."""
        status, response, conn = self.request("GET", key)
        try:
            if status != 200:
                raise S3Error(f"GET {key}: HTTP {status}: {response.read(300)!r}")
            digest, size = hashlib.sha256(), 0
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    return size, digest.hexdigest()
                digest.update(chunk)
                size += len(chunk)
        finally:
            conn.close()

    def delete(self, key):
        self._call("DELETE", key, ok=(204, 200, 404))

    def start_upload(self, key):
        _, data = self._call("POST", key, query={"uploads": ""})
        return _text(ET.fromstring(data), "UploadId")

    def abort_upload(self, key, upload_id):
        self._call("DELETE", key, query={"uploadId": upload_id}, ok=(204, 200, 404))
