// The page's expression-rig inputs against adasr's (web/golden/rig-v1.json, from the landmarks of two real faces):
// the face ratios a MOTION carries, the portrait's anchors in its crop, and the ratio change the renderer is fed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { rawRatios } from '../src/expression.js';
import { anchorsFromLandmarks, ratioChange, targetRatios } from '../src/rig.js';

const golden = JSON.parse(readFileSync(new URL('../golden/rig-v1.json', import.meta.url), 'utf8'));
const faces = JSON.parse(readFileSync(new URL('../golden/expression-v1.json', import.meta.url), 'utf8')).cases;
const close = (got, expected, tolerance, what) => {
  assert.equal(got.length, expected.length, what);
  expected.forEach((e, i) => assert.ok(Math.abs(got[i] - e) <= tolerance, `${what}[${i}]: ${got[i]} vs ${e}`));
};

test('face ratios and anchors equal the Python sender\'s on real faces', () => {
  for (const { name, landmarks } of faces) {
    const points = landmarks.map(([x, y]) => ({ x, y }));
    close(rawRatios(points), golden.ratios[name], 1e-5, `${name} ratios`);
    close(anchorsFromLandmarks(points, golden.box, golden.anchor_indices), golden.anchors[name], 1e-6,
      `${name} anchors`);
  }
});

test('target ratios equal adasr.expression_rig.target_ratios: relative, absolute, blink, clamps', () => {
  for (const c of golden.targets) {
    const [source, driving] = [Float32Array.from(c.source), Float32Array.from(c.driving)];
    const reference = c.reference === null ? null : Float32Array.from(c.reference);
    close(targetRatios(source, driving, reference), c.target, 1e-6, c.name);
    close(ratioChange(source, driving, reference), c.target.map((t, i) => t - c.source[i]), 1e-6, c.name);
  }
  assert.deepEqual(Array.from(ratioChange(null, Float32Array.from(golden.targets[0].driving))), new Array(8).fill(0));
  assert.deepEqual(Array.from(ratioChange(Float32Array.from(golden.targets[0].source), null)), new Array(8).fill(0));
});
