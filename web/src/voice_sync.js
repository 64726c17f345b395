// The other side's voice in step with its face on this page: realtime/PROTOCOL.md's "Voice and lip sync", done with
// what a browser's statistics expose. Both lags are taken against the sender's wall clock, so that the offset
// between the two clocks cancels (no clock synchronisation between the peers):
// - a face's lag: when it is drawn here minus when its motion was captured there (the capture timestamp turned into
//   the sender's wall clock by its CLOCK);
// - the voice's lag: its transit, from the voice's RTCP sender reports (remote-outbound-rtp: when a report arrived
//   here minus the sender's wall clock it carries, the least of the recent ones: aiortc stamps a report with the
//   send time of the packet before it), plus what the voice then waits here: the jitter buffer (inbound-rtp
//   jitterBufferDelay) and the audio output (media-playout, where the browser reports it).
// Face lag − voice lag is the lip-sync offset (positive: the face lags, as the Python receiver's av_offset_ms). Both
// ways of closing it are used, as in the Python receiver:
// - a face early for its voice is held until its voice plays, less the render's usual time (``holdMs``; at most
//   MAX_FACE_HOLD_MS), as realtime/receiver/face_sync.py holds it;
// - the voice follows the faces: RTCRtpReceiver.jitterBufferTarget (the jitter buffer's lowest delay) is set to its
//   delay now plus the offset three in four faces would have stayed under unheld, over a second: up for faces that
//   lag (a wasm render takes hundreds of ms, and how long swings with the machine's load), down to no more than
//   they need. Erring towards a later voice is what makes it work: an early face is held to the millisecond, a
//   voice moves slowly (the browser stretches the sound to get there, so the next change waits until it has), and
//   the face hold also covers its way down.
/** Longest hold the voice is given for its face (the API allows 4000 ms; a face slower than this is a fault). */
export const MAX_VOICE_TARGET_MS = 2000;
/** Longest a face waits for its voice (longer: the voice's own hold comes down instead). */
export const MAX_FACE_HOLD_MS = 500;
/** An offset smaller than this leaves the voice's delay as it is (each change is a stretch of the sound). */
export const DEADBAND_MS = 15;
const POLL_MS = 500;
const ADJUST_MS = 1000;
/** After a change, the faces count again once the voice's delay is this close to its target, or this long after. */
const SETTLED_MS = 20;
const SETTLE_TIMEOUT_MS = 1500;
/** A jitter buffer this far past the target it was given does not follow it (Firefox ESR 140 went to ~3 s for
 * 605 ms): the voice is left to the browser from then on, and only faces are held. */
const OVERSHOOT_MS = 500;
const MIN_FACES_PER_ADJUST = 2;
/** Sender reports whose least transit is the voice's (one a second from aiortc). */
const REPORTS_CONSIDERED = 10;
const SAMPLES_KEPT = 600;
/** The share of faces the voice waits for: the rest show late, by less than the spread of the face's lag. */
const VOICE_QUANTILE = 0.75;

/** The ``q`` quantile of ``values`` (linear between neighbours); null for none. */
export function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = q * (sorted.length - 1);
  const below = Math.floor(at);
  return sorted[below] + (at - below) * ((sorted[below + 1] ?? sorted[below]) - sorted[below]);
}

export const median = (values) => quantile(values, 0.5);

/** The voice's next jitter-buffer target (ms) from its delay now and the offsets of the faces shown since the last
 * change: that delay moved by the offset VOICE_QUANTILE of them stay under (faces late → the voice later), within
 * [0, ``maxMs``]; null to leave it
 * (no faces, or an offset within the dead band). Direct, not cumulative: both inputs describe the state now. */
export function nextVoiceTarget(voiceDelayMs, offsetsMs, maxMs = MAX_VOICE_TARGET_MS, deadbandMs = DEADBAND_MS) {
  const offset = quantile(offsetsMs, VOICE_QUANTILE);
  if (offset === null || voiceDelayMs === null || Math.abs(offset) < deadbandMs) return null;
  return Math.min(Math.max(voiceDelayMs + offset, 0), maxMs);
}

/** What a browser must offer for the page to hold its voice for its face: null when all is there, else why not. */
export function lipSyncUnsupported(receiver, inbound, remote) {
  if (!('jitterBufferTarget' in receiver)) return 'this browser cannot delay a received voice (no jitterBufferTarget)';
  if (inbound.jitterBufferDelay === undefined) return 'this browser does not report its voice\'s jitter buffer delay';
  if (remote !== null && remote.remoteTimestamp === undefined) {
    return 'this browser does not report the voice\'s sender reports (no remoteTimestamp)';
  }
  return null;
}

/** Mean delay per sample (ms) between two readings of a pair of cumulative counters (seconds summed, count). */
function meanDelayMs(before, after, total, count) {
  const n = before && after[count] - before[count];
  return n > 0 ? (1000 * (after[total] - before[total])) / n : null;
}

export class VoiceSync {
  /** ``receiver``: the RTCRtpReceiver of the other side's voice. */
  constructor(receiver) {
    this.receiver = receiver;
    this.senderWallMinusMonotonicUs = null; // from the sender's latest CLOCK
    this.voiceLagMs = null; // this page's clock minus the sender's at the sample heard now
    this.transitsMs = []; // per recent sender report: when it arrived minus the sender's clock in it
    this.lastReport = null;
    this.voiceDelayMs = null; // the jitter buffer's mean delay over the last poll
    this.playoutDelayMs = null; // the audio output's, where the browser reports it
    this.offsetsMs = []; // per face shown, face lag − voice lag
    this.heldMs = []; // per face shown, how long it waited for its voice
    this.pending = []; // the offsets the faces since the last change would have had unheld
    this.decisions = []; // per decision: when, the voice's delay, the faces' offset it used, the target set (or null)
    this.syncedFrom = null; // the number of faces shown before the first decision
    this.settling = null; // the target the voice is moving to
    this.voiceHoldFailed = null; // why the voice is no longer held, where the browser did not follow
    this.unsupported = null;
    this.previous = null;
    this.lastAdjust = performance.now();
  }

  start() {
    this.timer = setInterval(() => this.poll().catch((error) => { this.unsupported = error.message; }), POLL_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  /** The sender's CLOCK (``wire.decodeClock``): its wall clock beside its monotonic one. */
  noteClock({ timestampUs, wallUs }) {
    this.senderWallMinusMonotonicUs = wallUs - timestampUs;
  }

  /** The sender's wall clock (Unix ms) at its monotonic ``captureUs``; null before its first CLOCK. */
  capturedMs(captureUs) {
    const offset = this.senderWallMinusMonotonicUs;
    return offset === null ? null : Number(captureUs + offset) / 1000;
  }

  /** How long (ms) to hold the face captured at ``captureUs`` so that, rendered in the median of ``renderMs``, it
   * shows as its voice plays: in [0, MAX_FACE_HOLD_MS]; 0 while either timing is unknown. */
  holdMs(captureUs, renderMs) {
    const captured = this.capturedMs(captureUs);
    if (captured === null || this.voiceLagMs === null) return 0;
    const due = captured + this.voiceLagMs; // on this page's clock
    const wait = due - (median(renderMs) ?? 0) - (performance.timeOrigin + performance.now());
    return Math.min(Math.max(wait, 0), MAX_FACE_HOLD_MS);
  }

  /** A face captured at the sender's ``captureUs`` (monotonic), held ``heldMs`` for its voice, was just drawn:
   * record its offset to its voice. */
  faceShown(captureUs, heldMs = 0) {
    const captured = this.capturedMs(captureUs);
    if (captured === null || this.voiceLagMs === null) return;
    const offset = performance.timeOrigin + performance.now() - captured - this.voiceLagMs;
    this.offsetsMs.push(offset);
    this.heldMs.push(heldMs);
    if (this.offsetsMs.length > SAMPLES_KEPT) {
      [this.offsetsMs, this.heldMs].forEach((kept) => kept.shift());
      if (this.syncedFrom) this.syncedFrom -= 1;
    }
    this.pending.push(offset - heldMs);
  }

  /** Read the voice's transit and waits from the browser's statistics; once a second, move its hold. */
  async poll() {
    const reports = {};
    (await this.receiver.getStats()).forEach((report) => {
      if (['inbound-rtp', 'remote-outbound-rtp', 'media-playout'].includes(report.type)
        && (report.kind ?? 'audio') === 'audio') reports[report.type] = report;
    });
    const inbound = reports['inbound-rtp'];
    if (!inbound) return; // no voice yet
    const remote = reports['remote-outbound-rtp'] ?? null;
    this.unsupported = lipSyncUnsupported(this.receiver, inbound, remote);
    if (this.unsupported !== null) return;
    if (remote?.remoteTimestamp && remote.reportsSent !== this.lastReport) { // a new sender report
      this.lastReport = remote.reportsSent;
      this.transitsMs.push(remote.timestamp - remote.remoteTimestamp);
      if (this.transitsMs.length > REPORTS_CONSIDERED) this.transitsMs.shift();
    }
    const [before, playout] = [this.previous, reports['media-playout'] ?? null];
    this.previous = { inbound, playout };
    this.voiceDelayMs = meanDelayMs(before?.inbound, inbound, 'jitterBufferDelay', 'jitterBufferEmittedCount')
      ?? this.voiceDelayMs;
    this.playoutDelayMs = meanDelayMs(before?.playout, playout ?? {}, 'totalPlayoutDelay', 'totalSamplesCount')
      ?? this.playoutDelayMs;
    if (this.transitsMs.length && this.voiceDelayMs !== null) {
      this.voiceLagMs = Math.min(...this.transitsMs) + this.voiceDelayMs + (this.playoutDelayMs ?? 0);
    }
    const now = performance.now();
    if (this.settling !== null && this.voiceDelayMs > this.settling + OVERSHOOT_MS) {
      this.voiceHoldFailed = `the voice's jitter buffer did not follow its target (asked ${Math.round(this.settling)} ` +
        `ms, it held ${Math.round(this.voiceDelayMs)} ms): only faces are held from now on`;
      this.receiver.jitterBufferTarget = null;
      this.settling = null;
    }
    if (this.voiceHoldFailed !== null) return;
    if (this.settling !== null) { // the faces drawn while the voice moves to its new delay say nothing of it
      const reached = Math.abs(this.voiceDelayMs - this.settling) <= SETTLED_MS;
      if (!reached && now - this.lastAdjust < SETTLE_TIMEOUT_MS) return; // below its own need: it stops short
      [this.settling, this.pending, this.lastAdjust] = [null, [], now];
      return;
    }
    if (now - this.lastAdjust < ADJUST_MS || this.pending.length < MIN_FACES_PER_ADJUST) return;
    const target = nextVoiceTarget(this.voiceDelayMs, this.pending);
    this.syncedFrom ??= this.offsetsMs.length;
    this.decisions.push({ atMs: Math.round(now), voiceDelayMs: Math.round(this.voiceDelayMs),
      offsetMs: Math.round(quantile(this.pending, VOICE_QUANTILE)), targetMs: target === null ? null : Math.round(target) });
    [this.pending, this.lastAdjust] = [[], now];
    if (target !== null) {
      this.receiver.jitterBufferTarget = target;
      this.settling = target;
    }
  }

  /** The lip sync the page reports: the offsets' p50 and p95 (of their size) over the faces shown since the first
   * decision (before it, the voice was as the browser plays it). */
  syncedFigures() {
    const synced = this.syncedFrom === null ? [] : this.offsetsMs.slice(this.syncedFrom);
    return { offsetMsP50: median(synced), absOffsetMsP95: quantile(synced.map(Math.abs), 0.95),
      facesSynced: synced.length };
  }

  /** What the page reports: the offsets (ms, positive: the face lags), the voice's hold and lag, or why none. */
  figures() {
    return { offsetsMs: this.offsetsMs.map(Math.round), heldMs: this.heldMs.map(Math.round),
      ...this.syncedFigures(),
      targetMs: this.receiver.jitterBufferTarget ?? null, decisions: this.decisions, voiceDelayMs: this.voiceDelayMs,
      playoutDelayMs: this.playoutDelayMs, voiceLagMs: this.voiceLagMs, unsupported: this.unsupported,
      voiceHoldFailed: this.voiceHoldFailed };
  }
}
