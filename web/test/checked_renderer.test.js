// WebGPU is trusted only when its first frame matches wasm's (checked_renderer.js), tested with fake renderers: the
// page's headless Chromium here has only a software adapter.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CheckedRenderer, judgeWebGpu, psnr } from '../src/checked_renderer.js';

/** A FaceRenderer's stand-in: renders ``frame(n)`` for its n-th call, records its state. */
class FakeRenderer {
  constructor(frame) { Object.assign(this, { frame, renders: 0, source: null, side: 2 }); }

  volume(values, shape) { return { tensorOf: values, shape }; }

  setState(fs) { this.source = { fs }; return this.source; }

  async render() { this.renders += 1; return this.frame(this.renders); }
}

const still = (value) => () => new Float32Array(12).fill(value);

test('PSNR of frames in [0, 1]', () => {
  assert.ok(Math.abs(psnr(new Float64Array([0.5, 0.5]), new Float64Array([0.6, 0.4])) - 20) < 1e-9);
  assert.throws(() => psnr(new Float32Array(2), new Float32Array(3)), RangeError);
  assert.equal(judgeWebGpu(new Float32Array([NaN]), new Float32Array([0])).provider, 'wasm');
  assert.ok(Math.abs(judgeWebGpu(new Float64Array([0.5, 0.2]), new Float64Array([0.5, 0.25])).maxAbsDiff - 0.05) < 1e-12);
});

test('a WebGPU frame that disagrees with wasm\'s: every frame from wasm, and the page says why', async () => {
  const wasm = new FakeRenderer(still(0.5));
  const gpu = new FakeRenderer(still(0.6)); // 20 dB away
  const renderer = new CheckedRenderer(wasm, gpu);
  renderer.setState(renderer.volume([1], [1]), null, null);
  assert.ok(wasm.source && gpu.source); // both get the state until the verdict
  assert.deepEqual(await renderer.render(), still(0.5)());
  assert.deepEqual(await renderer.render(), still(0.5)());
  assert.equal(wasm.renders, 2);
  assert.equal(gpu.renders, 1); // only the check
  const verdict = renderer.figures();
  assert.equal(verdict.provider, 'wasm');
  assert.match(verdict.reason, /differed from wasm's \(20\.0 dB < 30 dB\)/);
});

test('a WebGPU frame that matches wasm\'s: the first frame is wasm\'s, the rest WebGPU\'s', async () => {
  const wasm = new FakeRenderer(still(0.5));
  const gpu = new FakeRenderer(still(0.5001));
  const renderer = new CheckedRenderer(wasm, gpu);
  renderer.setState(renderer.volume([1], [1]), null, null);
  await renderer.render();
  await renderer.render();
  assert.equal(renderer.figures().provider, 'webgpu');
  assert.ok(renderer.figures().psnrDb > 70);
  assert.deepEqual([wasm.renders, gpu.renders], [1, 2]);
  wasm.source = null;
  renderer.setState(renderer.volume([2], [1]), null, null); // a new source: only the trusted renderer needs it
  assert.equal(wasm.source, null);
  assert.deepEqual(renderer.source, { fs: { tensorOf: [2], shape: [1] } });
});

test('WebGPU that fails to render, or is not there: wasm, with the reason', async () => {
  const failing = new FakeRenderer(() => { throw new Error('no kernel for GridSample'); });
  const renderer = new CheckedRenderer(new FakeRenderer(still(0.5)), failing);
  renderer.setState(renderer.volume([1], [1]), null, null);
  await renderer.render();
  assert.equal(renderer.figures().provider, 'wasm');
  assert.match(renderer.figures().reason, /failed to render \(no kernel for GridSample\)/);
  const without = new CheckedRenderer(new FakeRenderer(still(0.5)), null, 'this browser has no WebGPU');
  assert.deepEqual(without.figures(), { provider: 'wasm', psnrDb: null, reason: 'this browser has no WebGPU' });
});
