// The page's wire format against the golden vectors the Python implementation wrote (web/golden/wire-v2.json).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  Compression, decodeClock, DEFAULT_QUANTIZER, decodeMotion, encodeClock, encodeGoodbye, encodeMotion, encodeResetReference,
  encodeStats, HEADER_SIZE, imageBody, MotionFlags, parseHeader, ProtocolError, sourcePayload, splitSource,
  zlibCompress,
} from '../src/wire.js';

const golden = JSON.parse(readFileSync(new URL('../golden/wire-v2.json', import.meta.url), 'utf8'));
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const fromHex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

const ratiosOf = (c) => (c.face_ratios === null ? null : Float32Array.from(c.face_ratios));

test('MOTION bytes equal the Python encoder\'s, clamped flag and face ratios included', () => {
  for (const c of golden.motion) {
    const { bytes, flags } = encodeMotion(c.seq, BigInt(c.timestamp_us), Float32Array.from(c.vector), c.flags,
      DEFAULT_QUANTIZER, ratiosOf(c));
    assert.equal(hex(bytes), c.hex, c.name);
    assert.equal(Boolean(flags & MotionFlags.FACE_RATIOS), c.face_ratios !== null, c.name);
  }
  const withRatios = golden.motion.find((c) => c.face_ratios !== null);
  assert.ok(fromHex(withRatios.hex).length <= 64); // a K = 15 motion and its face ratios, header included
});

test('MOTION decodes to the quantised vector within half a step', () => {
  for (const c of golden.motion.filter((m) => m.name !== 'clamped')) {
    const packet = decodeMotion(fromHex(c.hex));
    assert.equal(packet.seq, c.seq);
    assert.equal(packet.timestampUs, BigInt(c.timestamp_us));
    c.vector.forEach((v, i) => {
      const step = i < 3 ? 200 / 2046 : i < 6 ? 1 / 254 : 0.6 / 14;
      assert.ok(Math.abs(packet.vector[i] - v) <= step / 2 + 1e-5, `${c.name}[${i}]`);
    });
    assert.equal(packet.faceRatios === null, c.face_ratios === null, c.name);
    c.face_ratios?.forEach((v, i) => {
      const { low, high, bits } = DEFAULT_QUANTIZER.ratios[i];
      assert.ok(Math.abs(packet.faceRatios[i] - v) <= (high - low) / ((1 << bits) - 2) / 2 + 1e-6, `${c.name} r${i}`);
    });
  }
});

test('a MOTION whose FACE_RATIOS flag does not match its length is refused', () => {
  const withRatios = fromHex(golden.motion.find((c) => c.face_ratios !== null).hex);
  withRatios[HEADER_SIZE] &= ~MotionFlags.FACE_RATIOS;
  assert.throws(() => decodeMotion(withRatios), ProtocolError);
  const without = fromHex(golden.motion.find((c) => c.face_ratios === null).hex);
  without[HEADER_SIZE] |= MotionFlags.FACE_RATIOS;
  assert.throws(() => decodeMotion(without), ProtocolError);
});

test('a decoder refuses another version, bad magic, the all-ones code and a truncated header', () => {
  const good = fromHex(golden.motion[0].hex);
  const otherVersion = good.slice();
  otherVersion[2] = 1; // the release before the face ratios
  assert.throws(() => parseHeader(otherVersion), /version 1.*version 2/);
  const badMagic = good.slice();
  badMagic[0] = 0;
  assert.throws(() => parseHeader(badMagic), ProtocolError);
  assert.throws(() => parseHeader(good.subarray(0, 10)), ProtocolError);
  const allOnes = good.slice();
  allOnes[18] = 0xff;
  allOnes[19] = 0xff;
  assert.throws(() => decodeMotion(allOnes), /all-ones/);
});

test('STATS, GOODBYE, CLOCK and RESET_REFERENCE bytes equal the Python encoder\'s', () => {
  const s = golden.stats;
  assert.equal(hex(encodeStats(s.seq, BigInt(s.timestamp_us), s.counters)), s.hex);
  const g = golden.goodbye;
  assert.equal(hex(encodeGoodbye(g.seq, BigInt(g.timestamp_us), g.reason, g.text)), g.hex);
  const c = golden.clock;
  assert.equal(hex(encodeClock(c.seq, BigInt(c.timestamp_us), BigInt(c.wall_us))), c.hex);
  assert.deepEqual(decodeClock(parseHeader(fromHex(c.hex))),
    { timestampUs: BigInt(c.timestamp_us), wallUs: BigInt(c.wall_us) }); // the page reads the other side's CLOCK
  assert.throws(() => decodeClock(parseHeader(fromHex(c.hex).subarray(0, HEADER_SIZE + 4))), ProtocolError);
  const r = golden.reset_reference;
  assert.equal(hex(encodeResetReference(r.seq, BigInt(r.timestamp_us), r.from_motion_seq)), r.hex);
});

test('a SOURCE_IMAGE payload and its SOURCE_BEGIN/CHUNK messages equal the Python encoder\'s', async () => {
  const s = golden.source_image;
  const rig = { anchors: Float32Array.from(s.anchors), faceRatios: Float32Array.from(s.face_ratios) };
  const payload = sourcePayload(imageBody(fromHex(s.rgb_hex), s.height, s.width, rig), Compression.NONE);
  assert.equal(hex(payload), s.payload_hex);
  const messages = await splitSource(payload, fromHex(s.model_id_hex), s.kind, s.max_message,
    { firstSeq: s.first_seq, timestampUs: BigInt(s.timestamp_us) });
  assert.deepEqual(messages.map(hex), s.messages_hex);
  assert.ok(messages.every((m) => m.length <= s.max_message));
});

test('the zlib payload the page sends inflates back to the body', async () => {
  const s = golden.source_image;
  const body = imageBody(fromHex(s.rgb_hex), s.height, s.width);
  const payload = sourcePayload(body, Compression.ZLIB, await zlibCompress(body));
  const { inflateSync } = await import('node:zlib');
  assert.deepEqual(new Uint8Array(inflateSync(payload.subarray(12))), body);
  assert.equal(new DataView(payload.buffer).getUint32(8, true), body.length);
});
