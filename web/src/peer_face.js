// The other side's face in a two-way call (realtime/PROTOCOL.md, "Two-way calls"): the callee opens its own pair
// of channels once connected and runs an ordinary sender on them; the page is its receiver. The source state
// arrives on the callee's control channel, motion on its motion channel; the newest motion is rendered (latest
// wins: a frame never waits behind an older one), relative to the first one after a source or a reset, and the
// page answers as a receiver does: STATS every second (frames rendered and dropped, which the callee's sender
// follows), GOODBYE answered with final STATS then GOODBYE. The callee's CLOCK and each face drawn go to ``sync``
// (voice_sync.js), which holds the voice for a late face and says how long to hold an early face for its voice.
import { monotonicUs } from './call.js';
import { frameToRgba, withPhotoDifferences } from './render.js';
import { parseSourceMessage, SourceAssembler, unpackSourceState } from './source_state.js';
import {
  ANCHOR_BOUND, decodeClock, decodeMotion, encodeGoodbye, encodeStats, GoodbyeReason, MessageType, MotionFlags, parseHeader, ProtocolError,
  RATIO_BOUNDS, SourceKind,
} from './wire.js';

const KEEPALIVE_MS = 1000;
const SAMPLES_KEPT = 600;
/** Recent renders whose median is what a face is expected to take (realtime/receiver/face_sync.py's). */
const RENDERS_CONSIDERED = 30;

/** Serial-number order of u32 sequence numbers (RFC 1982): is ``seq`` newer than ``newest``? */
function newer(seq, newest) {
  if (newest === null) return true;
  const ahead = (seq - newest) >>> 0;
  return ahead >= 1 && ahead < 2 ** 31;
}

/** The portrait's expression-rig arrays of a received payload ({anchors, faceRatios}), both or neither, of the
 * rig's ``numAnchors`` and within the bounds the Python receiver checks (realtime/source_state_codec.py); null when
 * it sent none. */
export function receivedRig({ anchors, face_ratios: ratios }, numAnchors) {
  if (!anchors && !ratios) return null;
  if (!anchors || !ratios || anchors.shape.join() !== `1,${numAnchors},2` || ratios.shape.join() !== '8') {
    throw new ProtocolError('the other side\'s expression rig arrays are malformed');
  }
  const [low, high] = RATIO_BOUNDS;
  if (anchors.values.some((v) => Math.abs(v) > ANCHOR_BOUND) || ratios.values.some((v) => v < low || v > high)) {
    throw new ProtocolError('the other side\'s expression rig arrays are out of bounds');
  }
  return { anchors: anchors.values, faceRatios: ratios.values };
}

export class PeerFace {
  /** ``config``: the receiver's /call/config.json (model id, feature channel layout). */
  constructor(renderer, canvas, config) {
    Object.assign(this, { renderer, canvas, config });
    this.assembler = new SourceAssembler(Uint8Array.from(config.model_id.match(/../g), (h) => parseInt(h, 16)));
    this.stats = { packets_received: 0, packets_rejected: 0, frames_rendered: 0, frames_dropped: 0 };
    this.renderMs = [];
    this.firstFaceAt = null;
    this.sample = null;
    this.error = null;
    this.newestSeq = null;
    this.latest = null;
    this.reference = null;
    this.referenceRatios = null;
    this.resetFrom = null;
    this.rendering = false;
    this.controlSeq = 0;
    this.sync = null; // a VoiceSync once the voice's receiver is known
    this.ended = new Promise((resolve) => { this.end = resolve; });
  }

  /** Start receiving on the callee's two channels. */
  attach(control, motion) {
    this.control = control;
    control.binaryType = 'arraybuffer';
    motion.binaryType = 'arraybuffer';
    control.addEventListener('message', (event) => this.onControl(new Uint8Array(event.data)));
    motion.addEventListener('message', (event) => this.onMotion(new Uint8Array(event.data)));
    control.addEventListener('close', () => this.end('the other side\'s face channel closed'));
    this.keepalive = setInterval(() => this.sendStats(), KEEPALIVE_MS);
    this.ended.then(() => clearInterval(this.keepalive));
  }

  send(bytes) {
    if (this.control?.readyState === 'open') this.control.send(bytes);
  }

  nextSeq() {
    const seq = this.controlSeq;
    this.controlSeq = (seq + 1) % 2 ** 32;
    return seq;
  }

  sendStats() {
    this.send(encodeStats(this.nextSeq(), monotonicUs(), this.stats));
  }

  async onControl(bytes) {
    let message;
    try {
      message = parseHeader(bytes, this.config.max_message);
      if (message.type === MessageType.SOURCE_BEGIN || message.type === MessageType.SOURCE_CHUNK) {
        const done = await this.assembler.feed(parseSourceMessage(message));
        if (done !== null) await this.install(done);
      } else if (message.type === MessageType.CLOCK) {
        this.sync?.noteClock(decodeClock(message));
      } else if (message.type === MessageType.RESET_REFERENCE && message.payload.length === 4) {
        this.resetFrom = new DataView(message.payload.buffer, message.payload.byteOffset).getUint32(0, true);
      } else if (message.type === MessageType.GOODBYE) {
        this.sendStats();
        this.send(encodeGoodbye(this.nextSeq(), monotonicUs(), GoodbyeReason.NORMAL, ''));
        this.end('the other side hung up');
      }
    } catch (error) {
      this.stats.packets_rejected += 1;
      this.error = error.message;
      console.warn('refused a message of the other side\'s face:', error.message);
    }
  }

  /** A complete source transfer → the renderer's state (the feature volume plus what the page derives). */
  async install({ kind, payload }) {
    if (kind !== SourceKind.FEATURE_VOLUME) {
      throw new Error('the other side sent its portrait as an image: this page renders feature volumes only');
    }
    const arrays = await unpackSourceState(payload);
    const { f_s: fs, x_c: xc, motion } = arrays;
    if (!fs || !xc || !motion || fs.shape.length !== 5 || xc.values.length !== 3 * this.config.num_kp) {
      throw new Error('the other side\'s source state does not fit this model');
    }
    const full = this.config.derived_channels
      ? withPhotoDifferences(fs.values, fs.shape, this.config.feature_channel, this.config.detail_channels)
      : fs;
    this.renderer.setState(this.renderer.volume(full.values, full.shape), xc.values, motion.values,
      receivedRig(arrays, this.config.rig_anchors.length));
    this.reference = null;
    this.referenceRatios = null;
    this.renderNext();
  }

  onMotion(bytes) {
    this.stats.packets_received += 1;
    let packet;
    try {
      packet = decodeMotion(bytes);
    } catch {
      this.stats.packets_rejected += 1;
      return;
    }
    if (!newer(packet.seq, this.newestSeq)) {
      this.stats.packets_rejected += 1; // late or repeated: latest wins
      return;
    }
    this.newestSeq = packet.seq;
    if (this.latest !== null) this.stats.frames_dropped += 1; // overtaken before it was rendered
    this.latest = packet;
    this.renderNext();
  }

  /** Render the newest motion, then the newest that arrived meanwhile; one frame at a time. A render blocks this
   * thread (wasm), so before each one the loop gives way to the queued tasks: the messages that arrived meanwhile
   * (only the newest is rendered, the rest counted as dropped) and the page's own sending and keepalive. */
  async renderNext() {
    if (this.rendering || this.latest === null || this.renderer.source === null) return;
    this.rendering = true;
    try {
      for (;;) {
        await new Promise((resolve) => setTimeout(resolve, 0));
        if (this.latest === null) break;
        const packet = this.latest;
        this.latest = null;
        if (packet.flags & MotionFlags.FACE_LOST) continue; // hold the last frame
        if (this.resetFrom !== null && newer(packet.seq, (this.resetFrom - 1) >>> 0)) {
          this.reference = null;
          this.referenceRatios = null;
          this.resetFrom = null;
        }
        this.reference ??= packet.vector;
        this.referenceRatios ??= packet.faceRatios; // the first ratios after the reference was taken
        // a face early for its voice waits for it, less the render's usual time (voice_sync.js)
        const heldMs = this.sync?.holdMs(packet.timestampUs, this.renderMs.slice(-RENDERS_CONSIDERED)) ?? 0;
        if (heldMs > 0) await new Promise((resolve) => setTimeout(resolve, heldMs));
        const t0 = performance.now();
        const frame = await this.renderer.render(packet.vector, this.reference, packet.faceRatios,
          this.referenceRatios);
        const pixels = frameToRgba(frame, this.renderer.side);
        this.draw(pixels);
        this.sync?.faceShown(packet.timestampUs, heldMs);
        this.renderMs.push(performance.now() - t0);
        if (this.renderMs.length > SAMPLES_KEPT) this.renderMs.shift();
        this.stats.frames_rendered += 1;
        this.firstFaceAt ??= performance.now();
        this.sample = { vector: Array.from(packet.vector), reference: Array.from(this.reference), pixels,
          faceRatios: packet.faceRatios && Array.from(packet.faceRatios),
          referenceRatios: this.referenceRatios && Array.from(this.referenceRatios) };
      }
    } finally {
      this.rendering = false;
    }
  }

  draw(pixels) {
    const side = this.renderer.side;
    [this.canvas.width, this.canvas.height] = [side, side];
    this.canvas.getContext('2d').putImageData(new ImageData(pixels, side, side), 0, 0);
  }
}
