// Receiving the other side's source state: the payloads the Python sender packs (web/golden/wire-v2.json) decode
// to the values Python's unpack_source_state gives, and a transfer is reassembled and checked as Python does.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { parseSourceMessage, SourceAssembler, unpackSourceState } from '../src/source_state.js';
import { parseHeader, ProtocolError } from '../src/wire.js';

const golden = JSON.parse(readFileSync(new URL('../golden/wire-v2.json', import.meta.url), 'utf8'));
const fromHex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

test('fp16/zlib, int8 and fp32 payloads decode to Python\'s values exactly', async () => {
  for (const state of golden.source_states) {
    const arrays = await unpackSourceState(fromHex(state.payload_hex));
    assert.deepEqual(Object.keys(arrays).sort(), Object.keys(state.arrays).sort());
    for (const [name, { shape, values }] of Object.entries(state.arrays)) {
      assert.deepEqual(arrays[name].shape, shape, `${state.quantization} ${name}`);
      assert.deepEqual(Array.from(arrays[name].values), values, `${state.quantization} ${name}`);
    }
  }
});

test('a corrupt or lying payload is refused, not expanded', async () => {
  const payload = fromHex(golden.source_states[0].payload_hex);
  const lying = payload.slice();
  new DataView(lying.buffer).setUint32(8, 10, true); // claims fewer bytes than it inflates to
  await assert.rejects(unpackSourceState(lying), ProtocolError);
  await assert.rejects(unpackSourceState(payload, 100), /claims/);
  const broken = payload.slice(0, payload.length - 7);
  await assert.rejects(unpackSourceState(broken), ProtocolError);
  const older = payload.slice();
  older[4] = 1; // the format before the expression rig's arrays
  await assert.rejects(unpackSourceState(older), /format version 1, this page reads version 2/);
});

test('the SOURCE_IMAGE transfer reassembles with its checksum and model id checked', async () => {
  const s = golden.source_image;
  const [begin, ...chunks] = s.messages_hex.map((h) => parseSourceMessage(parseHeader(fromHex(h), s.max_message)));
  const assembler = new SourceAssembler(fromHex(s.model_id_hex));
  assert.equal(await assembler.feed(begin), null);
  let done = null;
  for (const chunk of chunks.reverse()) done = await assembler.feed(chunk); // chunks may come in any order
  assert.equal(done.kind, s.kind);
  assert.equal(Buffer.from(done.payload).toString('hex'), s.payload_hex);
  await assert.rejects(new SourceAssembler(new Uint8Array(32)).feed(begin), /same checkpoint/);
});
