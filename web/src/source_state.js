// The other side's source state, received: SOURCE_BEGIN/SOURCE_CHUNK put back together and checked
// (realtime/source_messages.py's SourceAssembler), and the payload's arrays decoded
// (realtime/source_payload.py's unpack_source_state). Every length is checked against the bytes present and a
// limit before anything is allocated from it; a failure is a ProtocolError with the reason.
import { MessageType, ProtocolError, STATE_FORMAT_VERSION } from './wire.js';

const MIN_CHUNK_DATA = 256 - 32;
const ENCODINGS = { 0: { name: 'f32', size: 4 }, 1: { name: 'f16', size: 2 }, 2: { name: 'affine-u8', size: 1 },
  3: { name: 'u8', size: 1 } };

function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** A SOURCE_BEGIN or SOURCE_CHUNK message (parsed header) → its fields; ProtocolError when inconsistent. */
export function parseSourceMessage({ type, payload }) {
  const v = view(payload);
  if (type === MessageType.SOURCE_BEGIN) {
    if (payload.length !== 84) throw new ProtocolError(`SOURCE_BEGIN payload of ${payload.length} bytes, expected 84`);
    const [transferId, total, chunkSize, count] = [0, 4, 8, 12].map((at) => v.getUint32(at, true));
    if (payload[17] || payload[18] || payload[19]) throw new ProtocolError('SOURCE_BEGIN with non-zero reserved bytes');
    if (total === 0 || chunkSize < Math.min(MIN_CHUNK_DATA, total) || chunkSize > total
        || count !== Math.ceil(total / chunkSize)) {
      throw new ProtocolError('SOURCE_BEGIN fields are inconsistent');
    }
    return { begin: true, transferId, total, chunkSize, count, kind: payload[16],
      sha256: payload.slice(20, 52), modelId: payload.slice(52, 84) };
  }
  if (type === MessageType.SOURCE_CHUNK) {
    if (payload.length < 16) throw new ProtocolError('SOURCE_CHUNK shorter than its fields');
    const [transferId, index, count, length] = [0, 4, 8, 12].map((at) => v.getUint32(at, true));
    if (count === 0 || index >= count || length === 0 || payload.length !== 16 + length) {
      throw new ProtocolError('SOURCE_CHUNK fields are inconsistent');
    }
    return { begin: false, transferId, index, count, data: payload.subarray(16) };
  }
  throw new ProtocolError(`message type 0x${type.toString(16)} is not part of a source transfer`);
}

/** Chunks of one announced transfer → the payload, once all are in and its SHA-256 matches. */
export class SourceAssembler {
  constructor(modelId, maxTotal = 64 * 1024 * 1024) {
    Object.assign(this, { modelId, maxTotal, current: null });
  }

  /** Take a parsed SOURCE_BEGIN/CHUNK; resolves to {kind, payload} when a transfer completes, else null. */
  async feed(message) {
    if (message.begin) {
      if (hex(message.modelId) !== hex(this.modelId)) {
        throw new ProtocolError(`source state was made by model ${hex(message.modelId).slice(0, 16)}…, this page ` +
          `runs ${hex(this.modelId).slice(0, 16)}…: both peers must load the same checkpoint and preset`);
      }
      if (message.total > this.maxTotal) throw new ProtocolError(`source transfer of ${message.total} bytes`);
      this.current = { ...message, chunks: new Map() };
      return null;
    }
    const begin = this.current;
    if (begin === null || message.transferId !== begin.transferId || message.count !== begin.count) {
      throw new ProtocolError('a chunk of no announced transfer');
    }
    const expected = Math.min(begin.chunkSize, begin.total - message.index * begin.chunkSize);
    if (message.data.length !== expected || begin.chunks.has(message.index)) {
      throw new ProtocolError(`chunk ${message.index} is a duplicate or of the wrong length`);
    }
    begin.chunks.set(message.index, message.data.slice());
    if (begin.chunks.size < begin.count) return null;
    this.current = null;
    const payload = new Uint8Array(begin.total);
    for (const [index, data] of begin.chunks) payload.set(data, index * begin.chunkSize);
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', payload));
    if (hex(digest) !== hex(begin.sha256)) throw new ProtocolError('source transfer failed its SHA-256 check');
    return { kind: begin.kind, payload };
  }
}

/** zlib stream → exactly ``length`` bytes; more, fewer or a broken stream is a ProtocolError (never expanded). */
async function inflateExactly(data, length) {
  const reader = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate')).getReader();
  const out = new Uint8Array(length);
  let at = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (at + value.length > length) throw new ProtocolError('source payload inflates past its declared length');
      out.set(value, at);
      at += value.length;
    }
  } catch (error) {
    if (error instanceof ProtocolError) throw error;
    throw new ProtocolError(`source payload does not inflate: ${error.message}`);
  } finally {
    reader.releaseLock();
  }
  if (at !== length) throw new ProtocolError(`source payload inflates to ${at} bytes, header says ${length}`);
  return out;
}

/** IEEE half → float (the wire's f16 arrays). */
function halfToFloat(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

/** Byte planes (all first bytes, then all second bytes…) → the little-endian values. */
function unshuffle(data, count, size) {
  const bytes = new Uint8Array(count * size);
  for (let b = 0; b < size; b += 1) {
    for (let i = 0; i < count; i += 1) bytes[i * size + b] = data[b * count + i];
  }
  return bytes;
}

function decodeArray(body, at, limits) {
  const need = (n, what) => {
    if (at + n > body.length) throw new ProtocolError(`source payload ends inside ${what}`);
  };
  need(1, 'an array name length');
  const nameLength = body[at];
  need(1 + nameLength + 2, 'an array header');
  const name = new TextDecoder('utf-8', { fatal: true }).decode(body.subarray(at + 1, at + 1 + nameLength));
  at += 1 + nameLength;
  const encoding = ENCODINGS[body[at]];
  const rank = body[at + 1];
  if (!encoding || rank > 8) throw new ProtocolError(`array ${name}: unknown encoding or rank ${rank}`);
  at += 2;
  need(4 * rank, `the shape of ${name}`);
  const shape = Array.from({ length: rank }, (_, i) => view(body).getUint32(at + 4 * i, true));
  at += 4 * rank;
  const count = shape.reduce((n, d) => n * d, 1);
  if (shape.some((d) => d === 0) || count > limits.maxValues) throw new ProtocolError(`array ${name} of shape ${shape}`);
  let values;
  if (encoding.name === 'affine-u8') {
    need(1, `the channel axis of ${name}`);
    const axis = body[at];
    if (axis >= rank) throw new ProtocolError(`array ${name}: channel axis ${axis}`);
    const channels = shape[axis];
    need(1 + 8 * channels + count, `the data of ${name}`);
    const params = new Float32Array(body.slice(at + 1, at + 1 + 8 * channels).buffer);
    const inner = shape.slice(axis + 1).reduce((n, d) => n * d, 1);
    const codes = body.subarray(at + 1 + 8 * channels, at + 1 + 8 * channels + count);
    values = Float32Array.from(codes, (q, i) => {
      const c = Math.floor(i / inner) % channels;
      return Math.fround(params[c] + Math.fround(q * params[channels + c]));
    });
    at += 1 + 8 * channels + count;
  } else {
    need(count * encoding.size, `the data of ${name}`);
    const data = body.subarray(at, at + count * encoding.size);
    if (encoding.name === 'u8') {
      values = data.slice();
    } else {
      const bytes = unshuffle(data, count, encoding.size);
      values = encoding.name === 'f32' ? new Float32Array(bytes.buffer)
        : Float32Array.from(new Uint16Array(bytes.buffer), halfToFloat);
    }
    at += count * encoding.size;
  }
  if (!(values instanceof Uint8Array) && values.some((x) => !Number.isFinite(x))) {
    throw new ProtocolError(`array ${name} contains NaN or infinity`);
  }
  return { name, array: { shape, values }, at };
}

/** A source payload → {name: {shape, values}}; ``maxRawBytes`` bounds what its header may claim. */
export async function unpackSourceState(payload, maxRawBytes = 128 * 1024 * 1024) {
  if (payload.length < 12) throw new ProtocolError('source payload shorter than its header');
  const v = view(payload);
  if (hex(payload.subarray(0, 4)) !== '41535243') throw new ProtocolError('bad source payload magic');
  if (payload[4] !== STATE_FORMAT_VERSION) {
    throw new ProtocolError(`peer speaks AdaSR source payload format version ${payload[4]}, this page reads version ` +
      `${STATE_FORMAT_VERSION}: both sides of a call must run releases with the same protocol version`);
  }
  if (v.getUint16(6, true) !== 0) throw new ProtocolError('source payload with non-zero reserved field');
  const length = v.getUint32(8, true);
  if (length > maxRawBytes) throw new ProtocolError(`source payload claims ${length} bytes`);
  let body;
  if (payload[5] === 0) body = payload.subarray(12);
  else if (payload[5] === 1) body = await inflateExactly(payload.subarray(12), length);
  else throw new ProtocolError(`source payload compression ${payload[5]} (this page reads none and zlib)`);
  if (body.length !== length) throw new ProtocolError('source payload body of the wrong length');
  const count = body.length >= 2 ? view(body).getUint16(0, true) : 0;
  if (count < 1 || count > 64) throw new ProtocolError(`source payload with ${count} arrays`);
  const arrays = {};
  let at = 2;
  for (let i = 0; i < count; i += 1) {
    const decoded = decodeArray(body, at, { maxValues: maxRawBytes });
    if (decoded.name in arrays) throw new ProtocolError(`array ${decoded.name} twice`);
    arrays[decoded.name] = decoded.array;
    at = decoded.at;
  }
  if (at !== body.length) throw new ProtocolError('trailing bytes after the last array');
  return arrays;
}
