"""The v2 parcel flow through the Python client generated from our OpenAPI spec.

Run by tests/sdk/run.sh, which generates the client package
(`amo_storage_service_client`) from openapi/openapi.json with
openapi-python-client and installs it into the venv. Every HTTP request here
goes through that generated client; the only handwritten part is the proof of
possession (docs/protocol.md, "Proof of possession"): ECDSA P-256 over SHA-256 of the token's
ASCII bytes, sent as 64-byte r||s hex, with the 65-byte uncompressed public
key in hex, and the account address = upper hex of the first 20 bytes of
SHA-256 of that key.

If the generated client cannot do a step (cannot send the body, cannot parse
an answer), that is a defect of the spec: fix the spec (src/api/*.rs), do not
work around it here.

Environment: AMO_ENDPOINT (default http://127.0.0.1:8080),
AMO_AUTH_VECTOR (default tests/vectors/amo-auth.json), AMO_SDK_BODY_KIB
(default 384).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from amo_storage_service_client import AuthenticatedClient, Client
from amo_storage_service_client.api.auth import auth_v1
from amo_storage_service_client.api.parcels_v1 import get_parcel_v1
from amo_storage_service_client.api.parcels_v2 import (
    download_parcel_v2,
    inspect_parcel_v2,
    remove_parcel_v2,
    upload_parcel_v2,
)
from amo_storage_service_client.models import (
    AuthRequest,
    AuthToken,
    DownloadOperation,
    DownloadOperationName,
    ErrorBody,
    ParcelIdBody,
    RemoveOperation,
    RemoveOperationName,
    UploadOperation,
    UploadOperationName,
    V1Key,
    V1ParcelMetadata,
    V1ParcelOwner,
    V2ParcelMetadata,
)
from amo_storage_service_client.types import File

REPO = Path(__file__).resolve().parents[2]
STEPS: list[str] = []


class FlowError(Exception):
    """A step of the flow did not answer what the API promises."""


def step(name: str) -> None:
    STEPS.append(name)
    print(f"--- {name}", flush=True)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise FlowError(message)


# --- the handwritten part: keys, addresses, signatures ----------------------


def public_key_bytes(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The 65-byte uncompressed SEC1 point."""
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def address_of(public_key_65: bytes) -> str:
    """Upper hex of the first 20 bytes of SHA-256 over the 65-byte key."""
    return hashlib.sha256(public_key_65).digest()[:20].hex().upper()


def sign_token(private_key: ec.EllipticCurvePrivateKey, token: str) -> str:
    """ECDSA P-256 / SHA-256 (hashed once) over the token's ASCII bytes, r||s hex."""
    der = private_key.sign(token.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


def verify_rs(public_key: ec.EllipticCurvePublicKey, token: str, rs_hex: str) -> bool:
    rs = bytes.fromhex(rs_hex)
    if len(rs) != 64:
        return False
    der = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    try:
        public_key.verify(der, token.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def vector_path() -> Path:
    if os.environ.get("AMO_AUTH_VECTOR"):
        return Path(os.environ["AMO_AUTH_VECTOR"])
    return REPO / "tests" / "vectors" / "amo-auth.json"


def check_signing_against_vector() -> None:
    """Our encodings reproduce the public server's own vector."""
    path = vector_path()
    step(f"signing self-test against {path}")
    vector = json.loads(path.read_text())
    key_bytes = bytes.fromhex(vector["public_key_hex"])
    check(len(key_bytes) == 65 and key_bytes[0] == 4, "vector key is not a 65-byte point")
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
    check(public_key_bytes(public_key) == key_bytes, "uncompressed encoding differs")
    check(address_of(key_bytes) == vector["address"], "address derivation differs from the vector")
    claims = jwt_claims(vector["token"])
    check(claims == vector["payload"], "token payload differs from the vector's")
    check(claims["user"] == vector["address"], "vector token user is not the key's address")
    check(
        verify_rs(public_key, vector["token"], vector["signature_rs_hex"]),
        "the vector's r||s signature does not verify over the token's ASCII bytes",
    )
    check(
        not verify_rs(public_key, vector["token"] + "x", vector["signature_rs_hex"]),
        "a signature over other bytes verified",
    )
    # Our signer's output (random k) must verify the same way, r||s 64 bytes.
    private_key = ec.generate_private_key(ec.SECP256R1())
    signature = sign_token(private_key, vector["token"])
    check(len(signature) == 128, "r||s is not 64 bytes")
    check(verify_rs(private_key.public_key(), vector["token"], signature), "own signature fails")


# --- the flow, through the generated client ----------------------------------


def expect(parsed, kind, what: str, response):
    if not isinstance(parsed, kind):
        raise FlowError(
            f"{what}: expected {kind.__name__}, got HTTP {int(response.status_code)} "
            f"parsed as {type(parsed).__name__}: {response.content[:300]!r}"
        )
    return parsed


def get_token(
    client: Client, user: str, operation: UploadOperation | DownloadOperation | RemoveOperation
) -> str:
    request = AuthRequest(user=user, operation=operation)
    response = auth_v1.sync_detailed(client=client, body=request)
    check(int(response.status_code) == 200, f"auth: HTTP {int(response.status_code)}")
    token = expect(response.parsed, AuthToken, "auth", response)
    claims = jwt_claims(token.token)
    check(claims.get("user", "").upper() == user, "token's user is not ours")
    check(
        claims.get("operation") == operation.to_dict(),
        f"token's operation {claims.get('operation')}",
    )
    check(token.expires_at == claims.get("exp"), "expires_at is not the token's exp")
    return token.token


def proof(endpoint: str, private_key: ec.EllipticCurvePrivateKey, key_hex: str,
          token: str) -> AuthenticatedClient:
    """A client that proves the account for one token. The spec declares the
    three proof headers as API-key security schemes required together; the
    generator's auth configuration (AuthenticatedClient) carries one of them,
    the token, in a header it names (no prefix), and the operations that need
    the proof take only an AuthenticatedClient. The other two go with it as
    the client's headers: the generator has no place for a second or third
    credential."""
    return AuthenticatedClient(
        base_url=endpoint,
        token=token,
        prefix="",
        auth_header_name="X-Auth-Token",
        headers={"X-Public-Key": key_hex, "X-Signature": sign_token(private_key, token)},
        raise_on_unexpected_status=True,
        timeout=60.0,
    )


def run_flow(endpoint: str) -> None:
    size = int(os.environ.get("AMO_SDK_BODY_KIB", "384")) * 1024
    body = os.urandom(size)
    digest = hashlib.sha256(body).hexdigest()
    private_key = ec.generate_private_key(ec.SECP256R1())
    key_65 = public_key_bytes(private_key.public_key())
    key_hex = key_65.hex()
    user = address_of(key_65)
    metadata = {"name": "sdk-flow", "size": size}
    print(f"endpoint {endpoint}, user {user}, body {size} bytes, sha256 {digest}")

    # raise_on_unexpected_status: a status the spec does not list fails the flow.
    client = Client(base_url=endpoint, raise_on_unexpected_status=True, timeout=60.0)

    step("POST /api/v1/auth (upload, with hash)")
    token = get_token(client, user, UploadOperation(name=UploadOperationName.UPLOAD, hash_=digest))

    step("POST /api/v2/parcels")
    response = upload_parcel_v2.sync_detailed(
        body=File(payload=io.BytesIO(body), mime_type="application/octet-stream"),
        x_parcel_metadata=json.dumps(metadata),
        client=proof(endpoint, private_key, key_hex, token),
    )
    check(int(response.status_code) == 201, f"upload: HTTP {int(response.status_code)}: "
          f"{response.content[:300]!r}")
    parcel_id = expect(response.parsed, ParcelIdBody, "upload", response).id
    check(parcel_id.upper().endswith(digest.upper()) and len(parcel_id) == 72,
          f"id {parcel_id} is not <storage id><sha256>")
    print(f"parcel {parcel_id}")

    step("GET /api/v2/parcels/{id}/metadata")
    response = inspect_parcel_v2.sync_detailed(parcel_id, client=client)
    check(int(response.status_code) == 200, f"inspect: HTTP {int(response.status_code)}")
    found = expect(response.parsed, V2ParcelMetadata, "inspect", response)
    check(found.id == parcel_id, f"inspect id {found.id}")
    check(found.owner.upper() == user, f"inspect owner {found.owner}")
    check(found.size == size, f"inspect size {found.size}")
    check(isinstance(found.metadata, dict), f"metadata is {type(found.metadata).__name__}")
    check(found.metadata.get("name") == "sdk-flow", f"metadata {found.metadata}")
    check(str(found.metadata.get("owner", "")).upper() == user, "metadata has no owner")

    step("GET /api/v1/parcels/{id}?key=metadata and ?key=owner (the anyOf answer)")
    # With `key` the spec needs no proof (its security: [{the three}, {}]); the
    # generator types this operation for an AuthenticatedClient anyway, and a
    # plain Client serves it, as the answers below show.
    response = get_parcel_v1.sync_detailed(parcel_id, client=client, key=V1Key.METADATA)
    view = expect(response.parsed, V1ParcelMetadata, "v1 key=metadata", response)
    check(view.id == parcel_id and view.owner.upper() == user, f"v1 metadata view {view}")
    response = get_parcel_v1.sync_detailed(parcel_id, client=client, key=V1Key.OWNER)
    owner = expect(response.parsed, V1ParcelOwner, "v1 key=owner", response)
    check(owner.owner.upper() == user, f"v1 owner view {owner}")

    step("GET /api/v2/parcels/{id} (whole)")
    token = get_token(client, user, DownloadOperation(name=DownloadOperationName.DOWNLOAD, id=parcel_id))
    response = download_parcel_v2.sync_detailed(
        parcel_id, client=proof(endpoint, private_key, key_hex, token)
    )
    check(int(response.status_code) == 200, f"download: HTTP {int(response.status_code)}: "
          f"{response.content[:300]!r}")
    got = expect(response.parsed, File, "download", response).payload.read()
    check(len(got) == size, f"downloaded {len(got)} bytes, uploaded {size}")
    check(got == body, "downloaded bytes differ from the uploaded ones")
    etag = response.headers.get("etag", "")
    check(etag.lower() == f'"{digest}"', f"ETag {etag} is not the quoted SHA-256")

    step("GET /api/v2/parcels/{id} (Range: bytes=100-4195)")
    token = get_token(client, user, DownloadOperation(name=DownloadOperationName.DOWNLOAD, id=parcel_id))
    response = download_parcel_v2.sync_detailed(
        parcel_id, client=proof(endpoint, private_key, key_hex, token), range_="bytes=100-4195"
    )
    check(int(response.status_code) == 206, f"range: HTTP {int(response.status_code)}")
    got = expect(response.parsed, File, "range download", response).payload.read()
    check(got == body[100:4196], "ranged bytes differ")
    check(response.headers.get("content-range") == f"bytes 100-4195/{size}",
          f"Content-Range {response.headers.get('content-range')}")

    step("DELETE /api/v2/parcels/{id}")
    token = get_token(client, user, RemoveOperation(name=RemoveOperationName.REMOVE, id=parcel_id))
    response = remove_parcel_v2.sync_detailed(
        parcel_id, client=proof(endpoint, private_key, key_hex, token)
    )
    check(int(response.status_code) == 204, f"remove: HTTP {int(response.status_code)}: "
          f"{response.content[:300]!r}")

    step("GET /api/v2/parcels/{id}/metadata after remove: 404")
    response = inspect_parcel_v2.sync_detailed(parcel_id, client=client)
    check(int(response.status_code) == 404, f"inspect after remove: HTTP "
          f"{int(response.status_code)}")
    error = expect(response.parsed, ErrorBody, "inspect after remove", response)
    check(error.code == "not_found", f"error code {error.code}")


def main() -> int:
    endpoint = os.environ.get("AMO_ENDPOINT", "http://127.0.0.1:8080").rstrip("/")
    try:
        check_signing_against_vector()
        run_flow(endpoint)
    except Exception as err:  # noqa: BLE001 - report any failure as the step's
        where = STEPS[-1] if STEPS else "start"
        print(f"FAILED at step '{where}': {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"{len(STEPS)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
