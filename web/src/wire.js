// The AdaSR call wire protocol, version 2, in JavaScript: the bytes the page puts on its data channels.
//
// realtime/PROTOCOL.md is the specification and realtime/{messages,motion_codec,source_messages,source_payload}.py
// the other implementation; web/golden/wire-v2.json holds byte vectors both are tested against, so the two cannot
// drift. Integers are little-endian; timestamps are u64 microseconds, passed as BigInt so no bit is lost.

export const MAGIC = [0x41, 0x53]; // "AS"
export const PROTOCOL_VERSION = 2;
export const HEADER_SIZE = 16;
export const DEFAULT_MAX_MESSAGE = 16 * 1024;
export const MIN_MAX_MESSAGE = 256;
export const MAX_MAX_MESSAGE = 1024 * 1024;

export const MessageType = Object.freeze({
  MOTION: 0x01,
  SOURCE_BEGIN: 0x10,
  SOURCE_CHUNK: 0x11,
  RESET_REFERENCE: 0x20,
  GOODBYE: 0x21,
  STATS: 0x22,
  SOURCE_REQUEST: 0x23,
  CLOCK: 0x24,
});

export const MotionFlags = Object.freeze({ NONE: 0, FACE_LOST: 0x01, CLAMPED: 0x02, FACE_RATIOS: 0x04 });
const ALLOWED_FLAGS = MotionFlags.FACE_LOST | MotionFlags.CLAMPED | MotionFlags.FACE_RATIOS;
export const GoodbyeReason = Object.freeze({ NORMAL: 0, ERROR: 1, VERSION_MISMATCH: 2, MODEL_MISMATCH: 3, TIMEOUT: 4 });
export const SourceKind = Object.freeze({ FEATURE_VOLUME: 1, SOURCE_IMAGE: 2 });
/** STATS counters, in wire order (realtime.messages.CallStats). */
export const STATS_FIELDS = Object.freeze([
  'frames_captured', 'frames_sent', 'face_lost_frames', 'packets_received',
  'packets_rejected', 'frames_rendered', 'frames_dropped', 'render_latency_us',
]);

const U32_MAX = 0xffffffff;
const U64_LIMIT = 1n << 64n;
const KNOWN_TYPES = new Set(Object.values(MessageType));

/** A malformed message or an argument the protocol cannot carry (realtime.errors.ProtocolError). */
export class ProtocolError extends Error {}

function checkU32(value, what) {
  if (!Number.isInteger(value) || value < 0 || value > U32_MAX) {
    throw new RangeError(`${what} must fit in u32, got ${value}`);
  }
}

function checkU64(value, what) {
  if (typeof value !== 'bigint' || value < 0n || value >= U64_LIMIT) {
    throw new RangeError(`${what} must be a BigInt in [0, 2^64), got ${value}`);
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The fixed 16-byte header: magic, version, type, u32 sequence number, u64 capture timestamp (µs). */
export function encodeHeader(type, seq, timestampUs) {
  if (!KNOWN_TYPES.has(type)) throw new RangeError(`unknown message type ${type}`);
  checkU32(seq, 'sequence number');
  checkU64(timestampUs, 'timestamp');
  const out = new Uint8Array(HEADER_SIZE);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  out[2] = PROTOCOL_VERSION;
  out[3] = type;
  view.setUint32(4, seq, true);
  view.setBigUint64(8, timestampUs, true);
  return out;
}

/** Validate the header (size, magic, version, type) and return it with the payload; ProtocolError otherwise. */
export function parseHeader(data, maxMessage = DEFAULT_MAX_MESSAGE) {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.length > maxMessage) throw new ProtocolError(`message of ${bytes.length} bytes exceeds ${maxMessage}`);
  if (bytes.length < 3 || bytes[0] !== MAGIC[0] || bytes[1] !== MAGIC[1]) {
    throw new ProtocolError('bad magic: not an AdaSR message');
  }
  if (bytes[2] !== PROTOCOL_VERSION) {
    throw new ProtocolError(`peer speaks AdaSR wire protocol version ${bytes[2]}, this page speaks version ` +
      `${PROTOCOL_VERSION}: both sides of a call must run releases with the same protocol version`);
  }
  if (bytes.length < HEADER_SIZE) throw new ProtocolError(`message of ${bytes.length} bytes is shorter than the header`);
  if (!KNOWN_TYPES.has(bytes[3])) throw new ProtocolError(`unknown message type 0x${bytes[3].toString(16)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    type: bytes[3],
    seq: view.getUint32(4, true),
    timestampUs: view.getBigUint64(8, true),
    payload: bytes.subarray(HEADER_SIZE),
  };
}

// ---- MOTION ---------------------------------------------------------------------------------------------------

/** Ranges and bit widths of protocol version 2's motion quantiser (realtime.motion_codec.MotionQuantizer), the
 * face ratios' in adasr.expression_signal.FEATURE_NAMES order (realtime.motion_codec.RATIO_RANGES). */
export const DEFAULT_QUANTIZER = Object.freeze({
  angle: { low: -100.0, high: 100.0, bits: 11 },
  t: { low: -0.5, high: 0.5, bits: 8 },
  delta: { low: -0.3, high: 0.3, bits: 4 },
  ratios: Object.freeze([[0.0, 0.8], [0.2, 1.0], [0.0, 0.8], [-0.2, 0.2], [-0.1, 0.6], [-0.1, 0.6], [0.0, 0.6],
    [0.0, 0.6]].map(([low, high]) => Object.freeze({ low, high, bits: 6 }))),
});
/** Face ratios a MOTION carries with the FACE_RATIOS flag (adasr.expression_signal.NUM_FEATURES). */
export const NUM_RATIOS = 8;

/** K from the length of a motion vector (6 + 3K numbers). */
export function keypointCount(size) {
  const expression = size - 6;
  if (expression < 3 || expression % 3 !== 0 || expression / 3 > 255) {
    throw new RangeError(`a motion vector has 6 + 3K numbers (1 <= K <= 255), got ${size}`);
  }
  return expression / 3;
}

/** Each number's {low, high, bits}: the motion vector's [6 + 3K], then the face ratios' when ``ratios``. */
function fieldLayout(size, quantizer, ratios = false) {
  const groups = [];
  for (let i = 0; i < size; i += 1) groups.push(i < 3 ? quantizer.angle : i < 6 ? quantizer.t : quantizer.delta);
  return ratios ? groups.concat(quantizer.ratios) : groups;
}

/** numpy.rint: round half to even, so that the codes equal the Python encoder's on every tie. */
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Float vector [6 + 3K] (+ face ratios [NUM_RATIOS]) → {codes, clamped}: clamp to each range, then
 * low + code·step with an odd level count. */
export function quantizeMotion(vector, quantizer = DEFAULT_QUANTIZER, faceRatios = null) {
  keypointCount(vector.length);
  if (faceRatios !== null && faceRatios.length !== NUM_RATIOS) {
    throw new RangeError(`face ratios hold ${NUM_RATIOS} numbers, got ${faceRatios.length}`);
  }
  const groups = fieldLayout(vector.length, quantizer, faceRatios !== null);
  const values = faceRatios === null ? vector : [...vector, ...faceRatios];
  const codes = new Uint32Array(groups.length);
  let clamped = false;
  groups.forEach(({ low, high, bits }, i) => {
    const value = values[i];
    if (Number.isNaN(value)) throw new RangeError('motion vector contains NaN');
    // the float32 edges count as in range, as in Python: a decoded edge value re-encodes unflagged
    if (value < Math.min(low, Math.fround(low)) || value > Math.max(high, Math.fround(high))) clamped = true;
    const clipped = Math.min(Math.max(value, low), high);
    const levels = (1 << bits) - 2;
    codes[i] = roundHalfEven(((clipped - low) / (high - low)) * levels);
  });
  return { codes, clamped };
}

/** Codes [6 + 3K (+ NUM_RATIOS)] → {vector, faceRatios} float32 (faceRatios null without ``ratios``). */
export function dequantizeMotion(codes, quantizer = DEFAULT_QUANTIZER, ratios = false) {
  const size = codes.length - (ratios ? NUM_RATIOS : 0);
  const groups = fieldLayout(size, quantizer, ratios);
  const values = Float32Array.from(groups, ({ low, high, bits }, i) => low + codes[i] * ((high - low) / ((1 << bits) - 2)));
  return { vector: values.subarray(0, size), faceRatios: ratios ? values.subarray(size) : null };
}

function packCodes(codes, groups) {
  const totalBits = groups.reduce((n, g) => n + g.bits, 0);
  const out = new Uint8Array(Math.ceil(totalBits / 8));
  let bit = 0;
  groups.forEach(({ bits }, i) => {
    for (let b = bits - 1; b >= 0; b -= 1, bit += 1) {
      if ((codes[i] >>> b) & 1) out[bit >> 3] |= 0x80 >> (bit & 7);
    }
  });
  return out;
}

function unpackCodes(data, groups) {
  const totalBits = groups.reduce((n, g) => n + g.bits, 0);
  if (data.length !== Math.ceil(totalBits / 8)) throw new ProtocolError('packed motion of the wrong length');
  const codes = new Uint32Array(groups.length);
  let bit = 0;
  groups.forEach(({ bits }, i) => {
    let code = 0;
    for (let b = 0; b < bits; b += 1, bit += 1) code = (code << 1) | ((data[bit >> 3] >> (7 - (bit & 7))) & 1);
    if (code === (1 << bits) - 1) throw new ProtocolError(`motion field ${i} holds the reserved all-ones code`);
    codes[i] = code;
  });
  for (; bit < data.length * 8; bit += 1) {
    if ((data[bit >> 3] >> (7 - (bit & 7))) & 1) throw new ProtocolError('non-zero padding bits after the codes');
  }
  return codes;
}

/** MOTION: header + flags u8 + K u8 + packed codes, the tracker's face ratios [NUM_RATIOS] after the motion's
 * when given (flag FACE_RATIOS); returns {bytes, flags} (CLAMPED added when a value was). */
export function encodeMotion(seq, timestampUs, vector, flags = MotionFlags.NONE, quantizer = DEFAULT_QUANTIZER,
  faceRatios = null) {
  if (flags & ~ALLOWED_FLAGS) throw new RangeError(`unknown motion flags ${flags}`);
  if (flags & MotionFlags.FACE_RATIOS && faceRatios === null) throw new RangeError('FACE_RATIOS without the ratios');
  const { codes, clamped } = quantizeMotion(vector, quantizer, faceRatios);
  let sent = clamped ? flags | MotionFlags.CLAMPED : flags;
  if (faceRatios !== null) sent |= MotionFlags.FACE_RATIOS;
  const prefix = Uint8Array.of(sent, keypointCount(vector.length));
  const bytes = concat([encodeHeader(MessageType.MOTION, seq, timestampUs), prefix,
    packCodes(codes, fieldLayout(vector.length, quantizer, faceRatios !== null))]);
  return { bytes, flags: sent };
}

/** Parse a MOTION message: {seq, timestampUs, flags, vector, faceRatios} (faceRatios null when none were sent). */
export function decodeMotion(data, quantizer = DEFAULT_QUANTIZER) {
  const { type, seq, timestampUs, payload } = parseHeader(data);
  if (type !== MessageType.MOTION) throw new ProtocolError(`not a MOTION message (type 0x${type.toString(16)})`);
  if (payload.length < 2) throw new ProtocolError('MOTION payload shorter than its prefix');
  const [flags, numKp] = payload;
  if (flags & ~ALLOWED_FLAGS) throw new ProtocolError('MOTION with reserved flag bits');
  if (numKp === 0) throw new ProtocolError('MOTION with zero keypoints');
  const ratios = Boolean(flags & MotionFlags.FACE_RATIOS);
  const codes = unpackCodes(payload.subarray(2), fieldLayout(6 + 3 * numKp, quantizer, ratios));
  return { seq, timestampUs, flags, ...dequantizeMotion(codes, quantizer, ratios) };
}

// ---- control messages -----------------------------------------------------------------------------------------

/** STATS: header + eight u32 counters (STATS_FIELDS order), saturating at 2^32 − 1. */
export function encodeStats(seq, timestampUs, stats) {
  const body = new Uint8Array(4 * STATS_FIELDS.length);
  const view = new DataView(body.buffer);
  STATS_FIELDS.forEach((name, i) => {
    const value = stats[name] ?? 0;
    if (!Number.isInteger(value) || value < 0) throw new RangeError(`stats counter ${name} must be an int >= 0`);
    view.setUint32(4 * i, Math.min(value, U32_MAX), true);
  });
  return concat([encodeHeader(MessageType.STATS, seq, timestampUs), body]);
}

/** GOODBYE: header + u8 reason + u8 text length + UTF-8 text (at most 255 bytes). */
export function encodeGoodbye(seq, timestampUs, reason = GoodbyeReason.NORMAL, text = '') {
  if (!Object.values(GoodbyeReason).includes(reason)) throw new RangeError(`unknown goodbye reason ${reason}`);
  const raw = new TextEncoder().encode(text);
  if (raw.length > 255) throw new RangeError(`goodbye text is ${raw.length} UTF-8 bytes, at most 255 allowed`);
  return concat([encodeHeader(MessageType.GOODBYE, seq, timestampUs), Uint8Array.of(reason, raw.length), raw]);
}

/** CLOCK: header (monotonic µs) + u64 wall clock (µs since the Unix epoch) read at the same instant. */
export function encodeClock(seq, timestampUs, wallUs) {
  checkU64(wallUs, 'wall clock');
  const body = new Uint8Array(8);
  new DataView(body.buffer).setBigUint64(0, wallUs, true);
  return concat([encodeHeader(MessageType.CLOCK, seq, timestampUs), body]);
}

/** A parsed CLOCK (``parseHeader``'s result) → the sender's two clocks read together, both µs as BigInt. */
export function decodeClock({ type, timestampUs, payload }) {
  if (type !== MessageType.CLOCK) throw new ProtocolError(`not a CLOCK message (type 0x${type.toString(16)})`);
  if (payload.length !== 8) throw new ProtocolError(`CLOCK payload of ${payload.length} bytes, 8 expected`);
  const wallUs = new DataView(payload.buffer, payload.byteOffset, 8).getBigUint64(0, true);
  return { timestampUs, wallUs };
}

/** RESET_REFERENCE: header + u32 first motion sequence number of the new reference. */
export function encodeResetReference(seq, timestampUs, fromMotionSeq) {
  checkU32(fromMotionSeq, 'from_motion_seq');
  const body = new Uint8Array(4);
  new DataView(body.buffer).setUint32(0, fromMotionSeq, true);
  return concat([encodeHeader(MessageType.RESET_REFERENCE, seq, timestampUs), body]);
}

// ---- source transfer ------------------------------------------------------------------------------------------

const STATE_MAGIC = [0x41, 0x53, 0x52, 0x43]; // "ASRC"
export const STATE_FORMAT_VERSION = 2;
export const Compression = Object.freeze({ NONE: 0, ZLIB: 1 });
const F32 = 0;
const RAW_U8 = 3;
const CHUNK_OVERHEAD = HEADER_SIZE + 16;

/** One named array of a payload body: name, encoding, rank, u32 shape, then the data as coded. */
function arrayRecord(name, encoding, shape, data) {
  const raw = new TextEncoder().encode(name);
  const head = new Uint8Array(1 + raw.length + 2 + 4 * shape.length);
  head[0] = raw.length;
  head.set(raw, 1);
  head[1 + raw.length] = encoding;
  head[2 + raw.length] = shape.length;
  const view = new DataView(head.buffer);
  shape.forEach((d, i) => view.setUint32(3 + raw.length + 4 * i, d, true));
  return concat([head, data]);
}

/** Float32 values as the payload's F32 encoding: little-endian bytes, byte-shuffled (all first bytes, then...). */
function shuffledFloat32(values) {
  const bytes = new Uint8Array(Float32Array.from(values).buffer); // little-endian on every platform the page runs
  const out = new Uint8Array(bytes.length);
  const count = values.length;
  for (let i = 0; i < count; i += 1) {
    for (let b = 0; b < 4; b += 1) out[b * count + i] = bytes[4 * i + b];
  }
  return out;
}

/** What a receiver accepts of the portrait's rig arrays (realtime.source_state_codec ANCHOR_BOUND, RATIO_BOUNDS). */
export const ANCHOR_BOUND = 2.0;
export const RATIO_BOUNDS = Object.freeze([-1.0, 2.0]);
const clip = (v, low, high) => Math.min(Math.max(v, low), high);

/** The body of a SOURCE_IMAGE payload: a raw uint8 array "image" [H, W, 3], and with ``rig`` ({anchors: [N·2]
 * normalised, faceRatios: [NUM_RATIOS]}, expression.js) the portrait's expression-rig arrays, clipped as the
 * Python sender clips them. */
export function imageBody(rgb, height, width, rig = null) {
  if (rgb.length !== height * width * 3) throw new RangeError(`an ${height}x${width} RGB image has ${height * width * 3} bytes`);
  const records = [arrayRecord('image', RAW_U8, [height, width, 3], rgb)];
  if (rig !== null) {
    if (rig.anchors.length % 2 !== 0 || rig.faceRatios.length !== NUM_RATIOS) throw new RangeError('malformed rig arrays');
    const anchors = Array.from(rig.anchors, (v) => clip(v, -ANCHOR_BOUND, ANCHOR_BOUND));
    const ratios = Array.from(rig.faceRatios, (v) => clip(v, ...RATIO_BOUNDS));
    records.push(arrayRecord('anchors', F32, [1, anchors.length / 2, 2], shuffledFloat32(anchors)),
      arrayRecord('face_ratios', F32, [NUM_RATIOS], shuffledFloat32(ratios)));
  }
  const count = new Uint8Array(2);
  new DataView(count.buffer).setUint16(0, records.length, true);
  return concat([count, ...records]);
}

/** The source payload: 12-byte outer header (magic, format version, compression, body length) + body as coded. */
export function sourcePayload(body, compression, coded) {
  checkU32(body.length, 'body length');
  const head = new Uint8Array(12);
  head.set(STATE_MAGIC, 0);
  head[4] = STATE_FORMAT_VERSION;
  head[5] = compression;
  new DataView(head.buffer).setUint32(8, body.length, true);
  return concat([head, compression === Compression.NONE ? body : coded]);
}

/** zlib (RFC 1950) of ``data``, which Python's zlib.decompress reads: the browser's "deflate" CompressionStream. */
export async function zlibCompress(data) {
  const stream = new Blob([data]).stream().pipeThrough(new CompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Payload → [SOURCE_BEGIN, SOURCE_CHUNK...] (realtime.source_messages.split_source), each ≤ maxMessage bytes. */
export async function splitSource(payload, modelId, kind, maxMessage = DEFAULT_MAX_MESSAGE,
  { transferId = null, firstSeq = 0, timestampUs = 0n } = {}) {
  if (payload.length === 0) throw new RangeError('cannot send an empty source payload');
  if (modelId.length !== 32) throw new RangeError('a model id is 32 bytes');
  if (!Number.isInteger(maxMessage) || maxMessage < MIN_MAX_MESSAGE || maxMessage > MAX_MAX_MESSAGE) {
    throw new RangeError(`maxMessage must be in [${MIN_MAX_MESSAGE}, ${MAX_MAX_MESSAGE}]`);
  }
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', payload));
  const id = transferId ?? new DataView(digest.buffer).getUint32(0, true);
  const chunkSize = Math.min(maxMessage - CHUNK_OVERHEAD, payload.length);
  const count = Math.ceil(payload.length / chunkSize);
  const begin = new Uint8Array(84);
  const view = new DataView(begin.buffer);
  [id, payload.length, chunkSize, count].forEach((v, i) => view.setUint32(4 * i, v, true));
  begin[16] = kind;
  begin.set(digest, 20);
  begin.set(modelId, 52);
  const messages = [concat([encodeHeader(MessageType.SOURCE_BEGIN, firstSeq % 2 ** 32, timestampUs), begin])];
  for (let index = 0; index < count; index += 1) {
    const data = payload.subarray(index * chunkSize, (index + 1) * chunkSize);
    const fields = new Uint8Array(16);
    const f = new DataView(fields.buffer);
    [id, index, count, data.length].forEach((v, i) => f.setUint32(4 * i, v, true));
    const seq = (firstSeq + 1 + index) % 2 ** 32;
    messages.push(concat([encodeHeader(MessageType.SOURCE_CHUNK, seq, timestampUs), fields, data]));
  }
  return messages;
}
