// The other side's face, rendered in the page with the same graphs the Python receiver runs: the source encoder
// once (its portrait crop → f_s, x_c, its own motion), then the renderer per motion (onnxruntime-web, wasm), fed
// the expression rig's inputs too: the portrait's anchors and the change of face ratios the driver asks (rig.js);
// on wasm, or on WebGPU once checked_renderer.js has checked it.
// Works in a page and in node (web/tools/render_check.mjs checks it against Python's ONNX Runtime).
import { NUM_FEATURES } from './expression.js';
import { drivingKeypoints, transformKeypoints } from './keypoints.js';
import { ratioChange } from './rig.js';

function concat(arrays) {
  const out = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) { out.set(a, at); at += a.length; }
  return out;
}

export class FaceRenderer {
  /** ``ort``: the onnxruntime-web module (the page's or node's); the graphs as bytes (the source encoder only
   * to encode a portrait here: a received feature volume needs none); ``numAnchors``: the expression rig's anchor
   * count (config.json's "rig_anchors"); ``provider``: the execution provider (checked_renderer.js checks a
   * WebGPU one against wasm before it is trusted). */
  static async create(ort, rendererBytes, side, numAnchors, encoderBytes = null, provider = 'wasm') {
    const options = { executionProviders: [provider], graphOptimizationLevel: 'all' };
    const [renderer, encoder] = await Promise.all([ort.InferenceSession.create(rendererBytes, options),
      encoderBytes && ort.InferenceSession.create(encoderBytes, options)]);
    return new FaceRenderer(ort, encoder, renderer, side, numAnchors);
  }

  constructor(ort, encoder, renderer, side, numAnchors) {
    Object.assign(this, { ort, encoder, renderer, side, numAnchors, source: null });
  }

  /** Encode the portrait crop (float32 CHW in [0, 1]) and, for a model that takes it, the portrait's expression
   * (expression.js; zeros: neutral); what an image source state becomes on a receiver. ``rig``: the portrait's
   * {anchors, faceRatios} (none: its mouth and eyes stay as they are). */
  async setSource(chw, expression = new Float32Array(NUM_FEATURES), rig = null) {
    const feeds = { image: new this.ort.Tensor('float32', chw, [1, 3, this.side, this.side]) };
    if (this.encoder.inputNames.includes('expression')) {
      feeds.expression = new this.ort.Tensor('float32', expression, [1, expression.length]);
    }
    const out = await this.encoder.run(feeds);
    const motion = concat(['yaw', 'pitch', 'roll', 't', 'delta'].map((name) => out[name].data));
    return this.setState(out.f_s, Float32Array.from(out.x_c.data), motion, rig);
  }

  /** A source state as the other side sent it (its feature volume with the derived channels appended: see
   * ``withPhotoDifferences``), or as the encoder made it; ``rig`` as for ``setSource``. */
  setState(fs, xc, motion, rig = null) {
    const anchors = rig?.anchors ?? new Float32Array(2 * this.numAnchors);
    if (anchors.length !== 2 * this.numAnchors) throw new RangeError(`the rig takes ${this.numAnchors} anchors`);
    this.source = { fs, xc, motion, kpSource: transformKeypoints(xc, motion), faceRatios: rig?.faceRatios ?? null,
      anchors: new this.ort.Tensor('float32', Float32Array.from(anchors), [1, this.numAnchors, 2]) };
    return this.source;
  }

  /** f_s values and shape → the renderer's tensor. */
  volume(values, shape) {
    return new this.ort.Tensor('float32', values, shape);
  }

  /** One frame for a motion and the driver's face ratios (relative to ``reference`` and its ratios when given):
   * float32 [3, S, S] in [0, 1]. */
  async render(motion, reference = null, faceRatios = null, referenceRatios = null) {
    const { fs, xc, kpSource, anchors } = this.source;
    const k = xc.length / 3;
    const tensor = (data) => new this.ort.Tensor('float32', data, [1, k, 3]);
    const change = ratioChange(this.source.faceRatios, faceRatios, reference === null ? null : referenceRatios);
    const out = await this.renderer.run({
      f_s: fs, kp_source: tensor(kpSource), kp_driving: tensor(drivingKeypoints(xc, kpSource, motion, reference)),
      anchors, ratio_change: new this.ort.Tensor('float32', change, [1, change.length]),
    });
    return out.frame.data;
  }
}

/** f_s as sent [1, C, D, h, w] (the photo packed in its channels from ``featureChannel``, its first
 * ``detailChannels`` planes before it) → f_s with the photo's second differences appended, across x, across y
 * and across both, edges replicated (adasr/detail_path.py's with_photo_differences): derived, never sent. */
export function withPhotoDifferences(values, shape, featureChannel, detailChannels) {
  const [, channels, depth, h, w] = shape;
  const side = 4 * h;
  const plane = side * side;
  const start = featureChannel * depth * h * w + detailChannels * plane;
  const photo = values.subarray(start, start + 3 * plane);
  const across = (image, dx, dy) => {
    const out = new Float32Array(image.length);
    for (let c = 0; c < image.length / plane; c += 1) {
      for (let y = 0; y < side; y += 1) {
        for (let x = 0; x < side; x += 1) {
          const at = (px, py) => image[c * plane + Math.min(Math.max(py, 0), side - 1) * side
            + Math.min(Math.max(px, 0), side - 1)];
          out[c * plane + y * side + x] = 2 * at(x, y) - at(x - dx, y - dy) - at(x + dx, y + dy);
        }
      }
    }
    return out;
  };
  const alongX = across(photo, 1, 0);
  const derived = concat([alongX, across(photo, 0, 1), across(alongX, 0, 1)]);
  return { values: concat([values, derived]), shape: [1, channels + derived.length / (depth * h * w), depth, h, w] };
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
