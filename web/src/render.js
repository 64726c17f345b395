// The other side's face, rendered in the page with the same graphs the Python receiver runs: the source encoder
// once (its portrait crop → f_s, x_c, its own motion), then the renderer per motion (onnxruntime-web, wasm).
// Works in a page and in node (web/tools/render_check.mjs checks it against Python's ONNX Runtime).
import { NUM_FEATURES } from './expression.js';
import { drivingKeypoints, transformKeypoints } from './keypoints.js';

function concat(arrays) {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) { out.set(a, at); at += a.length; }
  return out;
}

export class FaceRenderer {
  /** ``ort``: the onnxruntime-web module (the page's or node's); the graphs as bytes. */
  static async create(ort, encoderBytes, rendererBytes, side) {
    const options = { executionProviders: ['wasm'], graphOptimizationLevel: 'all' };
    const [encoder, renderer] = await Promise.all([
      ort.InferenceSession.create(encoderBytes, options), ort.InferenceSession.create(rendererBytes, options)]);
    return new FaceRenderer(ort, encoder, renderer, side);
  }

  constructor(ort, encoder, renderer, side) {
    Object.assign(this, { ort, encoder, renderer, side, source: null });
  }

  /** Encode the portrait crop (float32 CHW in [0, 1]) and, for a model that takes it, the portrait's expression
   * (expression.js; zeros: neutral); what an image source state becomes on a receiver. */
  async setSource(chw, expression = new Float32Array(NUM_FEATURES)) {
    const feeds = { image: new this.ort.Tensor('float32', chw, [1, 3, this.side, this.side]) };
    if (this.encoder.inputNames.includes('expression')) {
      feeds.expression = new this.ort.Tensor('float32', expression, [1, expression.length]);
    }
    const out = await this.encoder.run(feeds);
    const motion = concat(['yaw', 'pitch', 'roll', 't', 'delta'].map((name) => out[name].data));
    const xc = Float32Array.from(out.x_c.data);
    this.source = { fs: out.f_s, xc, motion, kpSource: transformKeypoints(xc, motion) };
    return this.source;
  }

  /** One frame for a motion (relative to ``reference`` when given): float32 [3, S, S] in [0, 1]. */
  async render(motion, reference = null) {
    const { fs, xc, kpSource } = this.source;
    const k = xc.length / 3;
    const tensor = (data) => new this.ort.Tensor('float32', data, [1, k, 3]);
    const out = await this.renderer.run({
      f_s: fs, kp_source: tensor(kpSource), kp_driving: tensor(drivingKeypoints(xc, kpSource, motion, reference)),
    });
    return out.frame.data;
  }
}

/** A frame [3, S, S] in [0, 1] → RGBA bytes for a canvas, rounded as the Python side's tensor_to_image. */
export function frameToRgba(frame, side) {
  const plane = side * side;
  const out = new Uint8ClampedArray(4 * plane);
  const byte = (v) => Math.floor(Math.min(Math.max(v, 0), 1) * 255 + 0.5);
  for (let i = 0; i < plane; i += 1) {
    for (let c = 0; c < 3; c += 1) out[4 * i + c] = byte(frame[c * plane + i]);
    out[4 * i + 3] = 255;
  }
  return out;
}
