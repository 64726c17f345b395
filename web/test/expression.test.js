// The page's expression features against the ones adasr/expression_signal.py computed from the same landmarks
// (web/golden/expression-v1.json), so a model with an expression mapper gets the same input from both senders.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { expressionFeatures, NUM_FEATURES } from '../src/expression.js';

const golden = JSON.parse(readFileSync(new URL('../golden/expression-v1.json', import.meta.url), 'utf8'));

test('expression features equal the Python sender\'s on real faces', () => {
  for (const { name, landmarks, features } of golden.cases) {
    const got = expressionFeatures(landmarks.map(([x, y]) => ({ x, y })));
    assert.equal(got.length, NUM_FEATURES);
    features.forEach((f, i) => assert.ok(Math.abs(got[i] - f) < 1e-4, `${name}[${i}]: ${got[i]} vs ${f}`));
  }
});
