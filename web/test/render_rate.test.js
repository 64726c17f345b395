// The page follows the receiver's render rate as `adasr send` does (realtime/render_rate.py).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { RenderRateFollower } from '../src/call.js';

test('a receiver that drops frames sets the rate; keeping up probes 25 % higher; a stall changes nothing', () => {
  const follower = new RenderRateFollower(30);
  assert.equal(follower.update(0, { frames_rendered: 0, frames_dropped: 0 }), null);
  assert.equal(follower.update(0.5, { frames_rendered: 3, frames_dropped: 9 }), null); // under the interval
  assert.equal(follower.update(2, { frames_rendered: 10, frames_dropped: 40 }), 5);
  assert.equal(follower.update(3, { frames_rendered: 15, frames_dropped: 40 }), 6.25);
  assert.equal(follower.update(4, { frames_rendered: 15, frames_dropped: 45 }), null); // rendered nothing: a stall
  assert.equal(follower.rate, 6.25);
});

test('a receiver that keeps up at the ceiling is left alone, and the limit lifts once the probe reaches it', () => {
  const follower = new RenderRateFollower(10);
  follower.update(0, { frames_rendered: 0, frames_dropped: 0 });
  assert.equal(follower.update(1, { frames_rendered: 10, frames_dropped: 0 }), null);
  assert.equal(follower.update(2, { frames_rendered: 18, frames_dropped: 2 }), 8);
  assert.equal(follower.update(3, { frames_rendered: 26, frames_dropped: 2 }), 10);
  assert.equal(follower.rate, null);
});
