// The v2 parcel flow through the TypeScript client generated from our OpenAPI
// spec: the same steps as tests/sdk/flow.py, in Node.
//
// Run by run.sh, which generates generated/schema.ts from openapi/openapi.json
// with openapi-typescript (generate.mjs), compiles this file with
// `tsc --strict` and runs it. Every HTTP request goes through openapi-fetch
// typed by that schema; the only handwritten part is the proof of possession
// (docs/protocol.md, "Proof of possession"): ECDSA P-256 over SHA-256 of the
// token's ASCII bytes, sent as 64-byte r||s hex, with the 65-byte
// uncompressed public key in hex; the account address is the upper hex of the
// first 20 bytes of SHA-256 of that key. Node's crypto does all of it.
//
// If the typed client cannot do a step, that is a defect of the spec: fix the
// spec (src/api/*.rs), not this file.
//
// Environment: AMO_ENDPOINT (default http://127.0.0.1:8080), AMO_AUTH_VECTOR
// (default tests/vectors/amo-auth.json), AMO_SDK_BODY_KIB (default 384).

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import createClient from "openapi-fetch";

import type { components, paths } from "./generated/schema.js";

type Schemas = components["schemas"];
type Operation = Schemas["AuthRequest"]["operation"];

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const STEPS: string[] = [];

class FlowError extends Error {}

function step(name: string): void {
  STEPS.push(name);
  console.log(`--- ${name}`);
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new FlowError(message);
  }
}

// --- the handwritten part: keys, addresses, signatures ----------------------

interface Account {
  privateKey: crypto.KeyObject;
  publicKeyHex: string;
  address: string;
}

/** The 65-byte uncompressed SEC1 point of a P-256 public key. */
function uncompressed(publicKey: crypto.KeyObject): Buffer {
  const jwk = publicKey.export({ format: "jwk" });
  check(typeof jwk.x === "string" && typeof jwk.y === "string", "the key has no x, y");
  const x = Buffer.from(jwk.x, "base64url");
  const y = Buffer.from(jwk.y, "base64url");
  check(x.length === 32 && y.length === 32, "a coordinate is not 32 bytes");
  return Buffer.concat([Buffer.from([4]), x, y]);
}

/** A P-256 public key from its 65-byte uncompressed point. */
function publicKeyOf(point: Buffer): crypto.KeyObject {
  check(point.length === 65 && point[0] === 4, "not a 65-byte uncompressed point");
  return crypto.createPublicKey({
    key: {
      kty: "EC",
      crv: "P-256",
      x: point.subarray(1, 33).toString("base64url"),
      y: point.subarray(33).toString("base64url"),
    },
    format: "jwk",
  });
}

/** Upper hex of the first 20 bytes of SHA-256 over the 65-byte key. */
function addressOf(point: Buffer): string {
  return crypto.createHash("sha256").update(point).digest().subarray(0, 20).toString("hex").toUpperCase();
}

function newAccount(): Account {
  const { privateKey, publicKey } = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  const point = uncompressed(publicKey);
  return { privateKey, publicKeyHex: point.toString("hex"), address: addressOf(point) };
}

/** ECDSA P-256 / SHA-256 (hashed once) over the token's ASCII bytes, r||s hex. */
function signToken(privateKey: crypto.KeyObject, token: string): string {
  const rs = crypto.sign("sha256", Buffer.from(token, "ascii"), {
    key: privateKey,
    dsaEncoding: "ieee-p1363",
  });
  return rs.toString("hex");
}

function verifyRs(publicKey: crypto.KeyObject, token: string, rsHex: string): boolean {
  const rs = Buffer.from(rsHex, "hex");
  if (rs.length !== 64) {
    return false;
  }
  return crypto.verify("sha256", Buffer.from(token, "ascii"), { key: publicKey, dsaEncoding: "ieee-p1363" }, rs);
}

function jwtClaims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1];
  check(payload !== undefined, "the token is not a JWT");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
}

function sameJson(a: unknown, b: unknown): boolean {
  const canonical = (value: unknown): unknown =>
    value !== null && typeof value === "object" && !Array.isArray(value)
      ? Object.fromEntries(
          Object.entries(value as Record<string, unknown>)
            .sort(([x], [y]) => (x < y ? -1 : 1))
            .map(([key, inner]) => [key, canonical(inner)]),
        )
      : value;
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

interface Vector {
  token: string;
  public_key_hex: string;
  signature_rs_hex: string;
  address: string;
  payload: Record<string, unknown>;
}

/** Our encodings reproduce the public server's own vector. */
function checkSigningAgainstVector(): void {
  const file = process.env.AMO_AUTH_VECTOR ?? path.join(REPO, "tests/vectors/amo-auth.json");
  step(`signing self-test against ${file}`);
  const vector = JSON.parse(fs.readFileSync(file, "utf8")) as Vector;
  const point = Buffer.from(vector.public_key_hex, "hex");
  const publicKey = publicKeyOf(point);
  check(uncompressed(publicKey).equals(point), "uncompressed encoding differs");
  check(addressOf(point) === vector.address, "address derivation differs from the vector");
  const claims = jwtClaims(vector.token);
  check(sameJson(claims, vector.payload), "token payload differs from the vector's");
  check(claims.user === vector.address, "vector token user is not the key's address");
  check(
    verifyRs(publicKey, vector.token, vector.signature_rs_hex),
    "the vector's r||s signature does not verify over the token's ASCII bytes",
  );
  check(!verifyRs(publicKey, `${vector.token}x`, vector.signature_rs_hex), "a signature over other bytes verified");
  // Our signer's output (random k) must verify the same way, r||s 64 bytes.
  const account = newAccount();
  const signature = signToken(account.privateKey, vector.token);
  check(signature.length === 128, "r||s is not 64 bytes");
  check(
    verifyRs(publicKeyOf(Buffer.from(account.publicKeyHex, "hex")), vector.token, signature),
    "own signature fails",
  );
}

// --- the flow, through the generated client ----------------------------------

type Client = ReturnType<typeof createClient<paths>>;

function describe(response: Response, error: unknown): string {
  return `HTTP ${response.status}: ${JSON.stringify(error ?? null).slice(0, 300)}`;
}

async function getToken(client: Client, account: Account, operation: Operation): Promise<string> {
  const { data, error, response } = await client.POST("/api/v1/auth", {
    body: { user: account.address, operation },
  });
  check(response.status === 200 && data !== undefined, `auth: ${describe(response, error)}`);
  const claims = jwtClaims(data.token);
  check(String(claims.user).toUpperCase() === account.address, "token's user is not ours");
  check(sameJson(claims.operation, operation), `token's operation ${JSON.stringify(claims.operation)}`);
  check(data.expires_at === claims.exp, "expires_at is not the token's exp");
  return data.token;
}

/**
 * A client that proves the account for one token. The spec declares the
 * three proof headers as API-key security schemes required together;
 * openapi-typescript makes no types from security schemes (it has no auth
 * configuration), so the operations no longer list them as parameters, and
 * the headers go with openapi-fetch's client-level `headers`.
 */
function proving(endpoint: string, account: Account, token: string): Client {
  return createClient<paths>({
    baseUrl: endpoint,
    headers: {
      "X-Auth-Token": token,
      "X-Public-Key": account.publicKeyHex,
      "X-Signature": signToken(account.privateKey, token),
    },
  });
}

async function runFlow(endpoint: string): Promise<void> {
  const size = Number(process.env.AMO_SDK_BODY_KIB ?? "384") * 1024;
  const body = crypto.randomBytes(size);
  const digest = crypto.createHash("sha256").update(body).digest("hex");
  const account = newAccount();
  const metadata = { name: "sdk-ts-flow", size };
  console.log(`endpoint ${endpoint}, user ${account.address}, body ${size} bytes, sha256 ${digest}`);

  const client = createClient<paths>({ baseUrl: endpoint });

  step("POST /api/v1/auth (upload, with hash)");
  let token = await getToken(client, account, { name: "upload", hash: digest });

  step("POST /api/v2/parcels");
  const uploaded = await proving(endpoint, account, token).POST("/api/v2/parcels", {
    params: { header: { "X-Parcel-Metadata": JSON.stringify(metadata) } },
    body: new Blob([body]),
    headers: { "Content-Type": "application/octet-stream" },
    // The body is raw bytes, not JSON: hand the Blob to fetch as it is.
    bodySerializer: (blob) => blob,
  });
  check(uploaded.response.status === 201 && uploaded.data !== undefined, `upload: ${describe(uploaded.response, uploaded.error)}`);
  const parcelId = uploaded.data.id;
  check(
    parcelId.length === 72 && parcelId.toUpperCase().endsWith(digest.toUpperCase()),
    `id ${parcelId} is not <storage id><sha256>`,
  );
  console.log(`parcel ${parcelId}`);
  const params = { path: { id: parcelId } };

  step("GET /api/v2/parcels/{id}/metadata");
  const inspected = await client.GET("/api/v2/parcels/{id}/metadata", { params });
  check(inspected.data !== undefined, `inspect: ${describe(inspected.response, inspected.error)}`);
  const found: Schemas["V2ParcelMetadata"] = inspected.data;
  check(found.id === parcelId, `inspect id ${found.id}`);
  check(found.owner.toUpperCase() === account.address, `inspect owner ${found.owner}`);
  check(found.size === size, `inspect size ${found.size}`);
  const stored = found.metadata as Record<string, unknown> | null;
  check(typeof stored === "object" && stored !== null, `metadata is ${typeof stored}`);
  check(stored.name === "sdk-ts-flow", `metadata ${JSON.stringify(stored)}`);
  check(String(stored.owner ?? "").toUpperCase() === account.address, "metadata has no owner");

  step("GET /api/v1/parcels/{id}?key=metadata and ?key=owner (the anyOf answer)");
  const v1Metadata = await client.GET("/api/v1/parcels/{id}", {
    params: { path: { id: parcelId }, query: { key: "metadata" } },
  });
  check(v1Metadata.data !== undefined, `v1 key=metadata: ${describe(v1Metadata.response, v1Metadata.error)}`);
  const view = v1Metadata.data;
  check(
    "id" in view && view.id === parcelId && view.owner.toUpperCase() === account.address && !("data" in view),
    `v1 metadata view ${JSON.stringify(view)}`,
  );
  const v1Owner = await client.GET("/api/v1/parcels/{id}", {
    params: { path: { id: parcelId }, query: { key: "owner" } },
  });
  check(v1Owner.data !== undefined, `v1 key=owner: ${describe(v1Owner.response, v1Owner.error)}`);
  check(
    !("id" in v1Owner.data) && v1Owner.data.owner.toUpperCase() === account.address,
    `v1 owner view ${JSON.stringify(v1Owner.data)}`,
  );

  step("GET /api/v2/parcels/{id} (whole)");
  token = await getToken(client, account, { name: "download", id: parcelId });
  const whole = await proving(endpoint, account, token).GET("/api/v2/parcels/{id}", { params, parseAs: "arrayBuffer" });
  check(whole.response.status === 200 && whole.data !== undefined, `download: ${describe(whole.response, whole.error)}`);
  const got = Buffer.from(whole.data);
  check(got.length === size, `downloaded ${got.length} bytes, uploaded ${size}`);
  check(got.equals(body), "downloaded bytes differ from the uploaded ones");
  const etag = whole.response.headers.get("etag") ?? "";
  check(etag.toLowerCase() === `"${digest}"`, `ETag ${etag} is not the quoted SHA-256`);

  step("GET /api/v2/parcels/{id} (Range: bytes=100-4195)");
  token = await getToken(client, account, { name: "download", id: parcelId });
  const ranged = await proving(endpoint, account, token).GET("/api/v2/parcels/{id}", {
    params: { ...params, header: { Range: "bytes=100-4195" } },
    parseAs: "arrayBuffer",
  });
  check(ranged.response.status === 206 && ranged.data !== undefined, `range: ${describe(ranged.response, ranged.error)}`);
  check(Buffer.from(ranged.data).equals(body.subarray(100, 4196)), "ranged bytes differ");
  const contentRange = ranged.response.headers.get("content-range");
  check(contentRange === `bytes 100-4195/${size}`, `Content-Range ${contentRange}`);

  step("DELETE /api/v2/parcels/{id}");
  token = await getToken(client, account, { name: "remove", id: parcelId });
  const removed = await proving(endpoint, account, token).DELETE("/api/v2/parcels/{id}", { params });
  check(removed.response.status === 204, `remove: ${describe(removed.response, removed.error)}`);

  step("GET /api/v2/parcels/{id}/metadata after remove: 404");
  const gone = await client.GET("/api/v2/parcels/{id}/metadata", { params });
  check(gone.response.status === 404 && gone.error !== undefined, `inspect after remove: HTTP ${gone.response.status}`);
  const failure: Schemas["ErrorBody"] = gone.error;
  check(failure.code === "not_found", `error code ${failure.code}`);
}

async function main(): Promise<number> {
  const endpoint = (process.env.AMO_ENDPOINT ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
  try {
    checkSigningAgainstVector();
    await runFlow(endpoint);
  } catch (err) {
    const where = STEPS.at(-1) ?? "start";
    const what = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    console.error(`FAILED at step '${where}': ${what}`);
    return 1;
  }
  console.log(`${STEPS.length} passed, 0 failed`);
  return 0;
}

process.exitCode = await main();
