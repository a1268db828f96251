// The example page's logic (see index.html and README.md): a P-256 account
// key made or reused with WebCrypto and kept, non-extractable, in IndexedDB;
// every request signed in the page; an upload with tus-js-client (pause and
// resume), a download with a progress bar, and a removal. The protocol is
// docs/protocol.md, "From a browser".
//
// The page's state is in document.body.dataset.state: loading, ready,
// hashing, uploading, paused, uploaded, downloading, downloaded, removing,
// removed, or error (with the message in #error).

const $ = (id) => document.getElementById(id);
const CHUNK_SIZE = 4 * 1024 * 1024;

// --- bytes ------------------------------------------------------------------

const hex = (bytes) =>
  Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');
const ascii = (text) => new TextEncoder().encode(text);
const sha256Hex = async (data) =>
  hex(await crypto.subtle.digest('SHA-256', data)).toUpperCase();

// --- the key ----------------------------------------------------------------
// Made once, extractable, so that its private half can be offered as a
// backup in that session only; what is stored is a non-extractable copy, so
// no script on this origin can read the private key afterwards (a later
// visit cannot export it: the backup is offered when the key is made).

const DB = 'amo-storage-example';
const STORE = 'keys';
const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' };

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function stored(action, ...args) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, action === 'get' ? 'readonly' : 'readwrite');
    const request = tx.objectStore(STORE)[action](...args);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** A non-extractable copy of the private key of `jwk`, and its public key. */
async function importPair(jwk) {
  const privateKey = await crypto.subtle.importKey('jwk', jwk, ALGORITHM, false, ['sign']);
  const { d: _private, ...publicJwk } = jwk;
  const publicKey = await crypto.subtle.importKey(
    'jwk', { ...publicJwk, key_ops: ['verify'] }, ALGORITHM, true, ['verify']);
  return { privateKey, publicKey };
}

let account = null; // { privateKey, publicKey, publicHex, address }
let backup = null; // the private JWK, in memory, for this session only

async function useKey(pair) {
  await stored('put', pair, 'account');
  const raw = await crypto.subtle.exportKey('raw', pair.publicKey); // 65 bytes, 04‖x‖y
  const address = (await sha256Hex(raw)).slice(0, 40);
  account = { ...pair, publicHex: hex(raw), address };
  $('address').textContent = address;
}

async function loadOrMakeKey() {
  const pair = await stored('get', 'account');
  if (pair) {
    await useKey(pair);
    $('key-status').textContent =
      'Key found in this browser (IndexedDB, non-extractable). Its backup was offered when it was made.';
    return;
  }
  const made = await crypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
  backup = await crypto.subtle.exportKey('jwk', made.privateKey);
  await useKey(await importPair(backup));
  $('export').disabled = false;
  $('key-status').textContent =
    'New key made and stored non-extractable. Export its backup now: this page cannot export it later.';
}

function exportBackup() {
  const blob = new Blob([JSON.stringify({ ...backup, address: account.address }, null, 2)],
    { type: 'application/json' });
  const link = document.createElement('a');
  link.href = URL.createObjectURL(blob);
  link.download = `amo-key-${account.address}.json`;
  link.click();
  URL.revokeObjectURL(link.href);
}

async function importBackup(file) {
  const { address: _address, ...jwk } = JSON.parse(await file.text());
  await useKey(await importPair(jwk));
  backup = null;
  $('export').disabled = true;
  $('key-status').textContent = 'Key restored from the backup and stored non-extractable.';
}

/** X-Signature: ECDSA P-256 with SHA-256 over `text`; WebCrypto answers the
 * raw 64-byte r‖s the service expects. */
async function sign(text) {
  return hex(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, account.privateKey, ascii(text)));
}

// --- the service ------------------------------------------------------------

const service = () => $('service').value.replace(/\/+$/, '');

/** A failed fetch: the browser hides why (CORS refusal or no answer). */
function unreachable(err) {
  return new Error(
    `The browser refused the request or got no answer (${err.message}). If the service ` +
    `runs, it does not allow this page's origin ${location.origin}: its operator adds it ` +
    'to AMO_CORS_ALLOWED_ORIGINS.');
}

async function call(url, init) {
  try {
    return await fetch(url, init);
  } catch (err) {
    throw unreachable(err);
  }
}

async function failure(response) {
  const body = await response.json().catch(() => ({}));
  return new Error(`${response.status} ${body.code ?? ''}: ${body.error ?? response.statusText}`);
}

async function token(operation) {
  const response = await call(`${service()}/api/v2/auth`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: account.address, operation }),
  });
  if (!response.ok) throw await failure(response);
  return (await response.json()).token;
}

async function proofHeaders(jwt) {
  return { 'X-Auth-Token': jwt, 'X-Public-Key': account.publicHex, 'X-Signature': await sign(jwt) };
}

// --- state ------------------------------------------------------------------

let current = null; // { file, sha, id, upload, sequence, ... }

function setState(state) {
  document.body.dataset.state = state;
  const s = state;
  $('upload').disabled = !['ready', 'removed', 'error'].includes(s) || !$('file').files.length;
  $('pause').disabled = s !== 'uploading';
  $('resume').disabled = s !== 'paused';
  $('download').disabled = !['uploaded', 'downloaded'].includes(s);
  $('remove').disabled = !['uploaded', 'downloaded'].includes(s);
}

function fail(err) {
  console.warn(err);
  $('error').textContent = err.message;
  setState('error');
}

const mib = (bytes) => (bytes / (1024 * 1024)).toFixed(1);
const rate = (bytes, ms) => (bytes / (1024 * 1024) / (ms / 1000)).toFixed(1);

// --- upload -----------------------------------------------------------------

async function upload() {
  $('error').textContent = '';
  $('parcel-id').textContent = '';
  const file = $('file').files[0];
  setState('hashing');
  $('upload-status').textContent = `Hashing ${file.name} (${mib(file.size)} MiB)…`;
  const sha = await sha256Hex(await file.arrayBuffer());
  const jwt = await token({ name: 'upload', hash: sha });
  current = { file, sha, jwt, sequence: 0, id: null, activeMs: 0, since: null };
  const upload = new tus.Upload(file, {
    endpoint: `${service()}/api/v2/uploads`,
    chunkSize: CHUNK_SIZE,
    retryDelays: [1000, 3000],
    storeFingerprintForResuming: false,
    metadata: { filename: file.name, metadata: JSON.stringify({ name: file.name, type: file.type }) },
    headers: { 'X-Auth-Token': jwt, 'X-Public-Key': account.publicHex },
    // Creation signs the token; HEAD, PATCH and DELETE sign the request
    // (docs/protocol.md, "Signing a request on an upload").
    async onBeforeRequest(req) {
      const method = req.getMethod();
      if (method === 'POST') {
        req.setHeader('X-Signature', await sign(jwt));
        return;
      }
      const id = new URL(req.getURL()).pathname.split('/').pop();
      const offset = method === 'PATCH' ? req.getHeader('Upload-Offset') : '';
      const sequence = method === 'PATCH' ? String(current.sequence) : '';
      if (method === 'PATCH') req.setHeader('X-Upload-Sequence', sequence);
      req.setHeader('X-Signature', await sign(`${method}\n${id}\n${offset}\n${sequence}\n${jwt}`));
    },
    onAfterResponse(_req, res) {
      const sequence = res.getHeader('X-Upload-Sequence');
      if (sequence) current.sequence = Number(sequence);
      const parcel = res.getHeader('X-Parcel-Id');
      if (parcel) current.id = parcel;
    },
    onProgress(sent, total) {
      $('upload-progress').value = sent / total;
      $('upload-status').textContent = `${mib(sent)} of ${mib(total)} MiB sent`;
    },
    onError(err) {
      const cause = err.originalRequest && !err.originalResponse ? unreachable(err) : err;
      fail(cause);
    },
    onSuccess() {
      current.activeMs += performance.now() - current.since;
      current.uploadRate = rate(file.size, current.activeMs);
      document.body.dataset.uploadRate = current.uploadRate;
      $('parcel-id').textContent = current.id;
      $('upload-status').textContent =
        `Uploaded ${mib(file.size)} MiB at ${current.uploadRate} MiB/s (time paused not counted)`;
      setState('uploaded');
    },
  });
  current.upload = upload;
  current.since = performance.now();
  setState('uploading');
  upload.start();
}

async function pause() {
  current.activeMs += performance.now() - current.since;
  await current.upload.abort();
  $('upload-status').textContent += ' (paused)';
  setState('paused');
}

function resume() {
  current.since = performance.now();
  setState('uploading');
  // The same Upload goes on at its URL: its HEAD learns the offset and the
  // sequence from the service.
  current.upload.start();
}

// --- download and remove ----------------------------------------------------

async function download() {
  setState('downloading');
  $('download-progress').value = 0;
  const id = current.id;
  const started = performance.now();
  const response = await call(`${service()}/api/v2/parcels/${id}`, {
    headers: await proofHeaders(await token({ name: 'download', id })),
  });
  if (!response.ok) throw await failure(response);
  const total = Number(response.headers.get('Content-Length'));
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    $('download-progress').value = received / total;
    $('download-status').textContent = `${mib(received)} of ${mib(total)} MiB received`;
  }
  const blob = new Blob(chunks, { type: current.file.type || 'application/octet-stream' });
  current.downloadRate = rate(received, performance.now() - started);
  document.body.dataset.downloadRate = current.downloadRate;
  const sha = await sha256Hex(await blob.arrayBuffer());
  const same = sha === current.sha;
  $('download-status').textContent =
    `Downloaded ${mib(received)} MiB at ${current.downloadRate} MiB/s; SHA-256 ${sha} ` +
    (same ? 'matches the file uploaded' : `DIFFERS from the file uploaded (${current.sha})`);
  $('download-status').dataset.match = String(same);
  $('save').href = URL.createObjectURL(blob);
  $('save').download = current.file.name;
  $('save').hidden = false;
  if (!same) throw new Error('the downloaded parcel is not the file uploaded');
  setState('downloaded');
}

async function remove() {
  setState('removing');
  const id = current.id;
  const response = await call(`${service()}/api/v2/parcels/${id}`, {
    method: 'DELETE',
    headers: await proofHeaders(await token({ name: 'remove', id })),
  });
  if (response.status !== 204) throw await failure(response);
  $('remove-status').textContent = `Parcel ${id} removed.`;
  setState('removed');
}

// --- wiring -----------------------------------------------------------------

const guarded = (action) => () => action().catch(fail);

$('upload').onclick = guarded(upload);
$('pause').onclick = guarded(pause);
$('resume').onclick = guarded(async () => resume());
$('download').onclick = guarded(download);
$('remove').onclick = guarded(remove);
$('export').onclick = exportBackup;
$('import').onchange = () => importBackup($('import').files[0]).catch(fail);
$('file').onchange = () => setState(document.body.dataset.state === 'loading' ? 'loading' : 'ready');
$('origin').textContent = location.origin;
$('service').value = new URLSearchParams(location.search).get('service') ?? location.origin;

// For the console (and the browser test): sign a text with the account key.
window.amoExample = { sign: (text) => sign(text), account: () => account && { address: account.address, publicHex: account.publicHex } };

if (!window.crypto?.subtle) {
  fail(new Error('WebCrypto is unavailable: serve this page over https, or http on localhost'));
} else if (typeof tus === 'undefined' || !tus.isSupported) {
  fail(new Error('tus-js-client did not load: run `npm ci` in this directory'));
} else {
  loadOrMakeKey().then(() => setState('ready'), fail);
}
