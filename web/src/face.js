// The face crop the networks see, cut as the Python side cuts it (adasr/faces.py, adasr/face_cropper.py): a
// square 1.8 times the landmarks' larger side, its centre 0.1 of their height above theirs, smoothed in a stream
// by a One-Euro filter with a dead zone; and the sender's motion smoothing (realtime/smoothing.py).

/** Crop and smoothing settings, the Python defaults (FaceTrackerConfig, SmoothingOptions). */
export const CROP = Object.freeze({ scale: 1.8, shiftUp: 0.1 });
export const BOX_SMOOTHING = Object.freeze({ minCutoffHz: 0.5, beta: 4.0, dCutoffHz: 1.0, deadZone: 0.02, snap: 0.5 });
export const MOTION_SMOOTHING = Object.freeze({
  minCutoffHz: 1.5, beta: 0.3, dCutoffHz: 1.0, angleScale: 1.0, translationScale: 0.01, expressionScale: 0.01,
});

const MIN_STEP_S = 1e-3;

function alpha(cutoffHz, dt) {
  const tau = 1 / (2 * Math.PI * Math.max(cutoffHz, 1e-9));
  return 1 / (1 + tau / dt);
}

/** One-Euro filter over a vector (Casiez et al. 2012), as adasr/one_euro.py: the first sample passes as is. */
export class OneEuroFilter {
  constructor({ minCutoffHz, beta, dCutoffHz }) {
    Object.assign(this, { minCutoffHz, beta, dCutoffHz });
    this.reset();
  }

  reset() {
    this.x = null;
    this.dx = null;
  }

  /** Filter ``values`` taken ``dt`` seconds after the previous sample. */
  step(values, dt) {
    const x = Float64Array.from(values);
    if (this.x === null || this.x.length !== x.length) {
      this.x = x.slice();
      this.dx = new Float64Array(x.length);
      return x;
    }
    const step = Math.max(dt, MIN_STEP_S);
    for (let i = 0; i < x.length; i += 1) {
      this.dx[i] += alpha(this.dCutoffHz, step) * ((x[i] - this.x[i]) / step - this.dx[i]);
      const cutoff = this.minCutoffHz + this.beta * Math.abs(this.dx[i]);
      this.x[i] += alpha(cutoff, step) * (x[i] - this.x[i]);
    }
    return this.x.slice();
  }
}

/** Float (cx, cy, size) of the raw crop around landmarks [{x, y}] in pixels. */
export function rawBox(points) {
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const { x, y } of points) {
    x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
  }
  const [w, h] = [x1 - x0, y1 - y0];
  return [(x0 + x1) / 2, (y0 + y1) / 2 - CROP.shiftUp * h, CROP.scale * Math.max(w, h)];
}

/** Integer square {x0, y0, size} around a float centre and side (CropBox.from_center). */
export function boxFromCenter([cx, cy, size]) {
  const s = Math.max(1, Math.round(size));
  return { x0: Math.round(cx - s / 2), y0: Math.round(cy - s / 2), size: s };
}

/** The stream's crop box: One-Euro in units of the first face's size, then a dead zone (adasr.faces._BoxSmoother). */
export class BoxSmoother {
  constructor(settings = BOX_SMOOTHING) {
    this.settings = settings;
    this.euro = new OneEuroFilter(settings);
    this.out = null;
  }

  reset() {
    this.out = null;
  }

  step(raw, dt) {
    const { deadZone, snap } = this.settings;
    if (this.out !== null && Math.hypot(raw[0] - this.out[0], raw[1] - this.out[1]) / Math.max(this.out[2], 1) > snap) {
      this.out = null; // a cut or a new face: start afresh
    }
    if (this.out === null) {
      this.scale = Math.max(raw[2], 1);
      this.euro.reset();
      this.euro.step(raw.map((v) => v / this.scale), dt);
      this.out = raw.slice();
      return this.out.slice();
    }
    const filtered = this.euro.step(raw.map((v) => v / this.scale), dt).map((v) => v * this.scale);
    const zone = deadZone * this.out[2];
    this.out = this.out.map((o, i) => o + Math.sign(filtered[i] - o) * Math.max(Math.abs(filtered[i] - o) - zone, 0));
    return this.out.slice();
  }
}

/** Draw ``box`` of ``source`` (video, image or canvas) onto the square ``canvas``; returns its RGBA pixels. */
export function cropInto(canvas, source, box) {
  const context = canvas.getContext('2d', { willReadFrequently: true });
  const side = canvas.width;
  context.fillStyle = '#000';
  context.fillRect(0, 0, side, side);
  context.drawImage(source, box.x0, box.y0, box.size, box.size, 0, 0, side, side);
  return context.getImageData(0, 0, side, side).data;
}

/** RGBA pixels of a side×side crop → the networks' input: float32 [1, 3, S, S] in [0, 1]. */
export function toChw(rgba, side) {
  const plane = side * side;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i += 1) {
    out[i] = rgba[4 * i] / 255;
    out[plane + i] = rgba[4 * i + 1] / 255;
    out[2 * plane + i] = rgba[4 * i + 2] / 255;
  }
  return out;
}

/** RGBA pixels → packed RGB bytes (the SOURCE_IMAGE array). */
export function toRgb(rgba) {
  const out = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    out[j] = rgba[i]; out[j + 1] = rgba[i + 1]; out[j + 2] = rgba[i + 2];
  }
  return out;
}

/** The sender's motion smoothing: One-Euro on the vector, each group in its own typical magnitude. */
export class MotionSmoother {
  constructor(settings = MOTION_SMOOTHING) {
    this.settings = settings;
    this.euro = new OneEuroFilter(settings);
  }

  reset() {
    this.euro.reset();
  }

  step(vector, dt) {
    const { angleScale, translationScale, expressionScale } = this.settings;
    const scales = Array.from(vector, (_, i) => (i < 3 ? angleScale : i < 6 ? translationScale : expressionScale));
    const smoothed = this.euro.step(Array.from(vector, (v, i) => v / scales[i]), dt);
    return Float32Array.from(smoothed, (v, i) => v * scales[i]);
  }
}
