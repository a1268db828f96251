// The tus-js-client check of tests/tus/js/run.sh: a real tus-js-client (from
// npm) uploads 4 MiB + 123 bytes in 512 KiB PATCHes to $AMO_ENDPOINT, each
// request signed in onBeforeRequest (the hook docs/protocol.md shows): the
// creation over the token, each HEAD and PATCH after it over the request,
// with the upload's sequence, learnt in onAfterResponse. The upload is
// aborted half-way and resumed by a new Upload on the same URL (its HEAD
// finds the offset and the sequence). Success is reported only with the
// parcel named (X-Parcel-Id), by the completing PATCH or, when a finished
// upload is resumed, by the HEAD that finds it complete. Then a captured PATCH is replayed
// (refused: 409 stale_request), the parcel is downloaded through the API
// and compared byte for byte, and removed. Exit status 0 only when all held.

import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto'
import { Upload } from 'tus-js-client'

const endpoint = process.env.AMO_ENDPOINT ?? 'http://127.0.0.1:8080'
const SIZE = 4 * 1024 * 1024 + 123
const CHUNK = 512 * 1024
const ABORT_AT = 2 * 1024 * 1024

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`)
  console.log(`ok: ${what}`)
}

// An account: a P-256 key; its address is the first 20 bytes of the
// SHA-256 of the uncompressed public key.
const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
const publicHex = publicKey.export({ type: 'spki', format: 'der' }).subarray(-65).toString('hex')
const address = createHash('sha256').update(Buffer.from(publicHex, 'hex')).digest('hex').slice(0, 40).toUpperCase()
const signText = (text) => sign('sha256', Buffer.from(text, 'ascii'), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('hex')

async function token(operation) {
  const res = await fetch(`${endpoint}/api/v2/auth`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: address, operation }),
  })
  check(res.status === 200, `/auth answers 200 for ${JSON.stringify(operation)}`)
  return (await res.json()).token
}

const data = randomBytes(SIZE)
const sha = createHash('sha256').update(data).digest('hex').toUpperCase()
const uploadToken = await token({ name: 'upload', hash: sha })

// The hook: what X-Signature signs, per request (docs/protocol.md,
// "Signing a request on an upload"), and the sequence each answer gives.
let sequence = 0
const signing = {
  headers: { 'X-Auth-Token': uploadToken, 'X-Public-Key': publicHex },
  onBeforeRequest(req) {
    const method = req.getMethod()
    if (method === 'POST') {
      req.setHeader('X-Signature', signText(uploadToken))
      return
    }
    const upload = new URL(req.getURL()).pathname.split('/').pop()
    const offset = method === 'PATCH' ? req.getHeader('Upload-Offset') : ''
    const seq = method === 'PATCH' ? String(sequence) : ''
    if (method === 'PATCH') req.setHeader('X-Upload-Sequence', seq)
    req.setHeader('X-Signature', signText(`${method}\n${upload}\n${offset}\n${seq}\n${uploadToken}`))
  },
  onAfterResponse(req, res) {
    const next = res.getHeader('X-Upload-Sequence')
    if (next !== undefined && next !== null && next !== '') sequence = Number(next)
  },
}

const patches = []
// The last X-Parcel-Id answered: tus-js-client must report success only
// after an answer named the parcel.
let parcelSeen = null
function start(options) {
  parcelSeen = null
  return new Promise((resolve, reject) => {
    const upload = new Upload(data, {
      endpoint: `${endpoint}/api/v2/uploads`,
      chunkSize: CHUNK,
      retryDelays: [100, 500, 1000],
      storeFingerprintForResuming: false,
      metadata: { metadata: JSON.stringify({ name: 'tus-js' }) },
      ...signing,
      onAfterResponse(req, res) {
        signing.onAfterResponse(req, res)
        const parcel = res.getHeader('X-Parcel-Id')
        if (parcel) parcelSeen = parcel
        if (req.getMethod() === 'PATCH' && res.getStatus() === 204) {
          patches.push({ offset: req.getHeader('Upload-Offset'), sequence: req.getHeader('X-Upload-Sequence'), signature: req.getHeader('X-Signature'), url: req.getURL() })
        }
      },
      onError: reject,
      onSuccess: () => resolve({ upload, done: true, parcel: parcelSeen }),
      ...options(() => upload, resolve),
    })
    upload.start()
  })
}

// Half-way, the upload is aborted (as a closed tab or a lost network would).
const first = await start((upload, resolve) => ({
  onChunkComplete(_size, accepted) {
    if (accepted >= ABORT_AT && !upload().aborted) {
      upload().aborted = true
      upload().abort().then(() => resolve({ upload: upload(), done: false, accepted }))
    }
  },
}))
check(!first.done && first.accepted >= ABORT_AT && first.accepted < SIZE, `aborted after ${first.accepted} bytes`)
const url = first.upload.url
console.log(`upload ${url}, sequence ${sequence} after ${patches.length} PATCHes`)

// Resumed by a new Upload on the same URL: its HEAD learns where to go on.
sequence = -1
const second = await start(() => ({ uploadUrl: url }))
const id = `00000001${sha}`
check(second.done, 'the resumed upload completes')
check(second.parcel === id, `success comes with X-Parcel-Id ${second.parcel}`)
check(patches.length >= Math.ceil(SIZE / CHUNK), `${patches.length} PATCHes, each answered 204`)

// The finished upload resumed again: its HEAD finds it complete, and names
// the parcel; no PATCH is sent.
const sent = patches.length
const third = await start(() => ({ uploadUrl: url }))
check(third.done && third.parcel === id && patches.length === sent, 'a finished upload resumes to success with X-Parcel-Id from HEAD')

// A captured PATCH replayed with its own headers: its sequence is spent.
const captured = patches[1]
const replay = await fetch(captured.url, {
  method: 'PATCH',
  headers: {
    'Tus-Resumable': '1.0.0',
    'Content-Type': 'application/offset+octet-stream',
    'Upload-Offset': captured.offset,
    'X-Upload-Sequence': captured.sequence,
    'X-Auth-Token': uploadToken,
    'X-Public-Key': publicHex,
    'X-Signature': captured.signature,
  },
  body: randomBytes(16),
})
check(replay.status === 409 && (await replay.json()).code === 'stale_request', 'a replayed PATCH answers 409 stale_request')

// The stored parcel, through the API.
const downloadToken = await token({ name: 'download', id })
const res = await fetch(`${endpoint}/api/v2/parcels/${id}`, {
  headers: { 'X-Auth-Token': downloadToken, 'X-Public-Key': publicHex, 'X-Signature': signText(downloadToken) },
})
check(res.status === 200, 'the parcel downloads')
const body = Buffer.from(await res.arrayBuffer())
check(body.length === SIZE && body.equals(data), 'the parcel is the bytes uploaded')

const removeToken = await token({ name: 'remove', id })
const removed = await fetch(`${endpoint}/api/v2/parcels/${id}`, {
  method: 'DELETE',
  headers: { 'X-Auth-Token': removeToken, 'X-Public-Key': publicHex, 'X-Signature': signText(removeToken) },
})
check(removed.status === 204, 'the parcel is removed')
console.log('OK: tus-js-client, signed requests, an abort and a resume')
