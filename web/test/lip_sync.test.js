// The page's lip sync (voice_sync.js) and its meter of the other side's voice (voice_meter.js), without a browser.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MAX_FACE_HOLD_MS, MAX_VOICE_TARGET_MS, nextVoiceTarget, VoiceSync } from '../src/voice_sync.js';
import { peakFrequency, rms } from '../src/voice_meter.js';

test('the voice waits for three faces in four: their offset from its delay now, within bounds, not a small one', () => {
  assert.equal(nextVoiceTarget(60, [240, 250, 260, 280, 1000]), 340); // 3 in 4 faces ≤ 280 ms late: the voice 280 later
  assert.equal(nextVoiceTarget(300, [-40, -60, -50]), 255); // faces early: less hold
  assert.equal(nextVoiceTarget(30, [-200, -100]), 0); // never below no hold
  assert.equal(nextVoiceTarget(100, [5000]), MAX_VOICE_TARGET_MS);
  assert.equal(nextVoiceTarget(100, [10, -5]), null); // within the dead band: no stretch of the sound
  assert.equal(nextVoiceTarget(100, []), null);
  assert.equal(nextVoiceTarget(null, [200]), null); // the voice's delay unknown yet
});

/** A receiver whose statistics say what the test sets, and that records the hold asked of it. */
class FakeReceiver {
  constructor() { Object.assign(this, { jitterBufferTarget: null, reports: [] }); }

  async getStats() { return new Map(this.reports.map((report, i) => [i, report])); }
}

/** The statistics of a voice: its latest sender report's transit (ms, as the browser sees it at ``now``), its
 * jitter buffer's and its output's cumulative delays (s) and counts. */
function voiceStats(now, transitMs, jitterS, playoutS, samples) {
  return [
    { type: 'inbound-rtp', kind: 'audio', jitterBufferDelay: jitterS, jitterBufferEmittedCount: samples },
    { type: 'remote-outbound-rtp', kind: 'audio', timestamp: now - 300, remoteTimestamp: now - 300 - transitMs,
      reportsSent: Math.round(transitMs) },
    { type: 'media-playout', kind: 'audio', totalPlayoutDelay: playoutS, totalSamplesCount: samples },
  ];
}

test('a face\'s offset is its lag behind the sender\'s clock less the voice\'s; the hold follows it', async () => {
  const receiver = new FakeReceiver();
  const sync = new VoiceSync(receiver);
  const now = performance.timeOrigin + performance.now();
  // the sender's monotonic clock reads 1 s when its wall clock reads `now` − 5 s (the clocks' offset: 5 s)
  sync.noteClock({ timestampUs: 1000000n, wallUs: BigInt(Math.round((now - 5000) * 1000)) });
  receiver.reports = voiceStats(now, 5030, 0, 0, 0); // a report 5 s + 30 ms (the network) behind
  await sync.poll();
  assert.equal(sync.voiceLagMs, null); // the jitter buffer's delay is not known from one reading
  // half a second later: 24000 samples waited 50 ms each in the jitter buffer and 20 ms in the output; a second
  // report came through faster (5 s + 20 ms): the least transit is the voice's
  receiver.reports = voiceStats(now, 5020, 1200, 480, 24000);
  await sync.poll();
  assert.ok(Math.abs(sync.voiceLagMs - (5020 + 50 + 20)) < 1e-6, sync.voiceLagMs);
  // a face captured at the sender's monotonic 1 s (its wall `now` − 5 s), drawn now: 5 s + ε behind: ~90 ms early
  sync.faceShown(1000000n);
  sync.faceShown(1000000n - 300000n); // one captured 300 ms before: ~210 ms late
  const [early, late] = sync.offsetsMs;
  assert.ok(Math.abs(early + 90) < 50 && Math.abs(late - 210) < 50, sync.offsetsMs);
  // a second on, the hold is the jitter buffer's delay moved by the faces' median offset
  receiver.reports = voiceStats(now, 5020, 2400, 960, 48000);
  sync.lastAdjust -= 1000;
  await sync.poll();
  assert.ok(Math.abs(receiver.jitterBufferTarget - (50 + early + 0.75 * (late - early))) < 1e-6,
    receiver.jitterBufferTarget);
  assert.equal(sync.figures().decisions.length, 1);
  // the faces drawn while the voice moves to its new delay are left out; once it is there they count again
  sync.faceShown(1000000n - 900000n);
  sync.lastAdjust -= 1000;
  await sync.poll(); // the buffer still at 50 ms: moving
  assert.equal(sync.settling, receiver.jitterBufferTarget);
  receiver.reports = voiceStats(now, 5020, 2400 + 24000 * (receiver.jitterBufferTarget / 1000), 1440, 72000);
  await sync.poll(); // there
  assert.equal(sync.settling, null);
  assert.deepEqual(sync.pending, []);
  assert.equal(sync.figures().decisions.length, 1);
});

test('an early face waits for its voice less its render time, at most MAX_FACE_HOLD_MS; the hold counts', async () => {
  const receiver = new FakeReceiver();
  const sync = new VoiceSync(receiver);
  const now = performance.timeOrigin + performance.now();
  sync.noteClock({ timestampUs: 1000000n, wallUs: BigInt(Math.round(now * 1000)) }); // the same clocks
  assert.equal(sync.holdMs(1000000n, [100]), 0); // the voice's timing unknown: shown at once
  receiver.reports = voiceStats(now, 20, 0, 0, 0);
  await sync.poll();
  receiver.reports = voiceStats(now, 20, 24000 * 0.3, 0, 24000); // the voice heard 20 + 300 ms after its capture
  await sync.poll();
  const hold = sync.holdMs(1000000n, [100, 120, 80]); // a face captured `now`, rendered in 100 ms: due in 320
  assert.ok(hold > 200 && hold <= 220, hold);
  assert.equal(sync.holdMs(1000000n - 2000000n, [100]), 0); // a face already late: no wait
  assert.equal(sync.holdMs(1000000n + 5000000n, [0]), MAX_FACE_HOLD_MS);
  sync.faceShown(1000000n, 250); // drawn now, held 250 ms: without the hold it would have been 250 ms earlier
  assert.ok(Math.abs(sync.pending[0] - (sync.offsetsMs[0] - 250)) < 1e-6);
  assert.deepEqual(sync.figures().heldMs, [250]);
});

test('a jitter buffer that overshoots its target is left to the browser; faces are still held', async () => {
  const receiver = new FakeReceiver();
  const sync = new VoiceSync(receiver);
  const now = performance.timeOrigin + performance.now();
  sync.noteClock({ timestampUs: 1000000n, wallUs: BigInt(Math.round(now * 1000)) });
  receiver.reports = voiceStats(now, 20, 0, 0, 0);
  await sync.poll();
  receiver.reports = voiceStats(now, 20, 24000 * 0.05, 0, 24000);
  await sync.poll();
  sync.faceShown(1000000n - 600000n);
  sync.faceShown(1000000n - 600000n);
  sync.lastAdjust -= 1000;
  await sync.poll();
  assert.ok(receiver.jitterBufferTarget > 500, receiver.jitterBufferTarget); // the voice asked to wait ~600 ms
  receiver.reports = voiceStats(now, 20, 24000 * 0.05 + 24000 * 3, 0, 48000); // and it waited 3 s
  await sync.poll();
  assert.equal(receiver.jitterBufferTarget, null);
  assert.match(sync.figures().voiceHoldFailed, /did not follow its target \(asked \d+ ms, it held 3000 ms\)/);
  sync.faceShown(1000000n - 600000n);
  sync.lastAdjust -= 1000;
  await sync.poll();
  assert.equal(receiver.jitterBufferTarget, null); // no more changes of the voice
  assert.ok(sync.holdMs(1000000n, [0]) > 0); // an early face still waits for its voice
});

test('a browser that cannot hold a received voice says so instead of guessing', async () => {
  const receiver = new FakeReceiver();
  receiver.reports = [{ type: 'inbound-rtp', kind: 'audio' }];
  const sync = new VoiceSync(receiver);
  await sync.poll();
  assert.match(sync.figures().unsupported, /jitter buffer delay/);
  delete receiver.jitterBufferTarget;
  await sync.poll();
  assert.match(sync.figures().unsupported, /jitterBufferTarget/);
});

test('the meter finds a tone\'s frequency and level', () => {
  const rate = 48000;
  const bins = 2048;
  const spectrum = Float32Array.from({ length: bins }, (_, i) => (i === Math.round((330 * 2 * bins) / rate) ? -20 : -90));
  assert.ok(Math.abs(peakFrequency(spectrum, rate) - 330) < rate / (2 * bins));
  const tone = Float32Array.from({ length: 4800 }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 330 * i) / rate));
  assert.ok(Math.abs(rms(tone) - 0.5 / Math.SQRT2) < 1e-3);
});
