// The page's side of a call as `adasr send` is: the offer to POST /offer (bearer token, every candidate in the
// SDP, no trickle), the two data channels of realtime/transport.py, the voice as the browser's Opus track, and the
// control link's rules (realtime/control_link.py): CLOCK, then STATS every second as the keepalive, the source
// transfer, and at the end final STATS then GOODBYE.
import {
  DEFAULT_QUANTIZER, encodeClock, encodeGoodbye, encodeMotion, encodeStats, GoodbyeReason, MessageType, parseHeader,
  splitSource,
} from './wire.js';

export const MOTION_LABEL = 'adasr-motion';
export const CONTROL_LABEL = 'adasr-control';
const OPEN_TIMEOUT_MS = 30000;
const KEEPALIVE_MS = 1000;
/** Source chunks wait while the control channel holds more than this unsent (a big upload is paced). */
const MAX_BUFFERED = 1 << 20;

/** Never send slower than this; while a lowered rate keeps up, try this much more each time (render_rate.py). */
const MIN_FPS = 1.0;
const PROBE_UP = 1.25;

/** The send rate that follows what the receiver renders, from its STATS (realtime/render_rate.py): a receiver
 * that drops frames (latest wins) renders at most this fast, so more motion is wasted work on both sides. */
export class RenderRateFollower {
  constructor(ceilingFps, intervalS = 1.0) {
    Object.assign(this, { ceilingFps, intervalS, rate: null, last: null });
  }

  /** The receiver's latest counters at ``nowS``: the rate to send at from now on, or null to keep the current. */
  update(nowS, { frames_rendered: rendered, frames_dropped: dropped }) {
    if (this.last === null) {
      this.last = { nowS, rendered, dropped };
      return null;
    }
    const elapsed = nowS - this.last.nowS;
    if (elapsed < this.intervalS) return null;
    const before = this.last;
    this.last = { nowS, rendered, dropped };
    let proposed;
    if (dropped > before.dropped) {
      if (rendered === before.rendered) return null; // a stall says nothing about its speed
      proposed = Math.max(MIN_FPS, (rendered - before.rendered) / elapsed);
    } else if (this.rate !== null) {
      proposed = this.rate * PROBE_UP;
    } else {
      return null;
    }
    proposed = Math.min(proposed, this.ceilingFps);
    if (proposed >= this.ceilingFps && this.rate === null) return null;
    const current = this.rate ?? this.ceilingFps;
    if (Math.abs(proposed - current) < 0.05 * current) return null;
    this.rate = proposed >= this.ceilingFps ? null : proposed;
    return proposed;
  }
}

/** A failure to tell the person as it is: the message is the whole explanation. */
export class CallError extends Error {}

/** Microseconds on the page's monotonic clock (the capture timestamps' clock). */
export const monotonicUs = () => BigInt(Math.round(performance.now() * 1000));
const wallUs = () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));

/** What a refused request means to the person holding the link. */
export function refusalMessage(status) {
  if (status === 401) {
    return 'The receiver refused this link\'s token (401). Ask the person you are calling for a fresh link: ' +
      'a restarted `adasr receive` has a new token.';
  }
  if (status === 409) return 'The receiver is in another call (409). Try again when it has ended.';
  return `The receiver answered HTTP ${status}.`;
}

/** GET /offer with the token: checks the link before anything is downloaded or asked for. */
export async function probe(token) {
  const reply = await fetch('/offer', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (reply.status !== 204) throw new CallError(refusalMessage(reply.status));
}

function waitGathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });
}

function waitOpen(channel) {
  if (channel.readyState === 'open') return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new CallError(
      `The call's data channel did not open within ${OPEN_TIMEOUT_MS / 1000} s: this browser cannot reach the ` +
      'receiver over UDP (a firewall, or a network between you that needs a TURN server).')), OPEN_TIMEOUT_MS);
    channel.addEventListener('open', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

export class Call {
  /** Offer a call to this page's receiver; resolves once both channels are open. */
  static async connect(token, voiceTrack, fps) {
    const pc = new RTCPeerConnection({ iceServers: [] });
    // the callee's face comes on channels it opens, its voice on the one audio transceiver's receiver
    const peer = { channels: {} };
    peer.face = new Promise((resolve) => {
      pc.addEventListener('datachannel', ({ channel }) => {
        if ([CONTROL_LABEL, MOTION_LABEL].includes(channel.label)) peer.channels[channel.label] = channel;
        if (peer.channels[CONTROL_LABEL] && peer.channels[MOTION_LABEL]) {
          resolve({ control: peer.channels[CONTROL_LABEL], motion: peer.channels[MOTION_LABEL] });
        }
      });
    });
    peer.voice = (voiceTrack ? pc.addTransceiver(voiceTrack, { direction: 'sendrecv' })
      : pc.addTransceiver('audio', { direction: 'recvonly' })).receiver;
    const control = pc.createDataChannel(CONTROL_LABEL, { ordered: true });
    const motion = pc.createDataChannel(MOTION_LABEL, { ordered: false, maxRetransmits: 0 });
    await pc.setLocalDescription(await pc.createOffer());
    await waitGathered(pc);
    const reply = await fetch('/offer', {
      method: 'POST', cache: 'no-store',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: 'offer' }),
    });
    if (!reply.ok) {
      pc.close();
      const detail = await reply.json().catch(() => ({}));
      throw new CallError(`${refusalMessage(reply.status)} ${detail.error ?? ''}`.trim());
    }
    await pc.setRemoteDescription(await reply.json());
    const call = new Call(pc, control, motion, fps);
    call.peer = peer;
    try {
      await Promise.all([waitOpen(control), waitOpen(motion)]);
    } catch (error) {
      pc.close();
      throw error;
    }
    call.start();
    return call;
  }

  constructor(pc, control, motion, fps) {
    Object.assign(this, { pc, control, motion });
    this.fps = fps;
    this.follower = new RenderRateFollower(fps);
    this.controlSeq = 0;
    this.motionSeq = 0;
    this.stats = { frames_captured: 0, frames_sent: 0, face_lost_frames: 0, clamped_frames: 0 };
    this.peerStats = null;
    this.peerGoodbye = null;
    this.ended = new Promise((resolve) => { this.endCall = resolve; });
    control.binaryType = 'arraybuffer';
    control.addEventListener('message', (event) => this.onControl(event.data));
    control.addEventListener('close', () => this.endCall('the receiver closed the call'));
    pc.addEventListener('connectionstatechange', () => {
      if (['failed', 'closed'].includes(pc.connectionState)) this.endCall(`the connection is ${pc.connectionState}`);
    });
  }

  start() {
    this.sendClock();
    this.keepalive = setInterval(() => { this.sendClock(); this.sendStats(); }, KEEPALIVE_MS);
    this.ended.then(() => clearInterval(this.keepalive));
  }

  sendControl(bytes) {
    if (this.control.readyState === 'open') this.control.send(bytes);
  }

  nextControlSeq() {
    const seq = this.controlSeq;
    this.controlSeq = (this.controlSeq + 1) % 2 ** 32;
    return seq;
  }

  sendClock() {
    this.sendControl(encodeClock(this.nextControlSeq(), monotonicUs(), wallUs()));
  }

  sendStats() {
    this.sendControl(encodeStats(this.nextControlSeq(), monotonicUs(), this.stats));
  }

  /** The portrait (a SOURCE payload) in chunks that fit the receiver's messages, paced by the channel's buffer. */
  async sendSource(payload, modelId, kind, maxMessage) {
    const messages = await splitSource(payload, modelId, kind, maxMessage,
      { firstSeq: this.controlSeq, timestampUs: monotonicUs() });
    this.controlSeq = (this.controlSeq + messages.length) % 2 ** 32;
    this.control.bufferedAmountLowThreshold = MAX_BUFFERED / 2;
    for (const message of messages) {
      if (this.control.bufferedAmount > MAX_BUFFERED) {
        await new Promise((resolve) => this.control.addEventListener('bufferedamountlow', resolve, { once: true }));
      }
      this.sendControl(message);
    }
    return messages.reduce((n, m) => n + m.length, 0);
  }

  /** One MOTION on the unreliable channel, stamped with the frame's capture time, with the tracker's face ratios
   * (null before any face). */
  sendMotion(vector, flags, captureUs, faceRatios = null) {
    if (this.motion.readyState !== 'open') return;
    const { bytes, flags: sent } = encodeMotion(this.motionSeq, captureUs, vector, flags, DEFAULT_QUANTIZER,
      faceRatios);
    this.motionSeq = (this.motionSeq + 1) % 2 ** 32;
    this.motion.send(bytes);
    this.stats.frames_sent += 1;
    if (sent & 1) this.stats.face_lost_frames += 1;
    if (sent & 2) this.stats.clamped_frames += 1;
  }

  onControl(data) {
    let message;
    try {
      message = parseHeader(new Uint8Array(data));
    } catch (error) {
      console.warn('ignored a malformed control message:', error.message);
      return;
    }
    if (message.type === MessageType.STATS) {
      const view = new DataView(message.payload.buffer, message.payload.byteOffset, message.payload.byteLength);
      if (message.payload.length === 32) {
        this.peerStats = { frames_rendered: view.getUint32(20, true), frames_dropped: view.getUint32(24, true) };
        const rate = this.follower.update(performance.now() / 1000, this.peerStats);
        if (rate !== null) {
          console.info(`the receiver renders ${rate.toFixed(1)} fps: sending at that rate`);
          this.fps = rate;
        }
      }
    } else if (message.type === MessageType.GOODBYE && message.payload.length >= 2) {
      const text = new TextDecoder().decode(message.payload.subarray(2, 2 + message.payload[1]));
      this.peerGoodbye = { reason: message.payload[0], text };
      if (!this.hangingUp) { // the receiver hung up: answer as the protocol says, final STATS then GOODBYE
        this.sendStats();
        this.sendControl(encodeGoodbye(this.nextControlSeq(), monotonicUs(), GoodbyeReason.NORMAL, ''));
      }
      this.endCall(this.hangingUp ? 'hung up' : `the receiver hung up${text ? `: ${text}` : ''}`);
    }
  }

  /** Final STATS, GOODBYE, then wait (bounded) for the receiver's answer before closing. */
  async hangUp(text = 'hung up', waitMs = 5000) {
    this.hangingUp = true;
    this.sendStats();
    this.sendControl(encodeGoodbye(this.nextControlSeq(), monotonicUs(), GoodbyeReason.NORMAL, text));
    await Promise.race([this.ended, new Promise((resolve) => setTimeout(resolve, waitMs))]);
    this.endCall('hung up');
    this.pc.close();
  }
}
