// The motion extractor in onnxruntime-web (wasm, threads): a face crop → the motion vector of a MOTION message,
// yaw, pitch, roll, t, δ (adasr.keypoints.Motion.to_vector order). The graph is the one the Python side exported;
// it takes what it declares: the image, and for a model with an expression mapper the expression vector too.
import * as ort from '/ort/ort.wasm.min.mjs';

export { ort };

/** Where a runtime's wasm is served from and how many threads it gets (its default is 1 on a 2-core machine). */
export function configureRuntime(threads, runtime = ort) {
  runtime.env.wasm.wasmPaths = '/ort/';
  runtime.env.wasm.numThreads = threads;
}

/** onnxruntime-web's WebGPU build (24 MB more), loaded only where the browser offers a WebGPU adapter: the
 * module, or null and why not. */
export async function loadWebGpuRuntime(threads) {
  if (!navigator.gpu) return { runtime: null, reason: 'this browser has no WebGPU' };
  if (!(await navigator.gpu.requestAdapter())) {
    return { runtime: null, reason: 'this browser offers no WebGPU adapter (no GPU, or it is disabled)' };
  }
  const runtime = await import('/ort/ort.webgpu.min.mjs');
  configureRuntime(threads, runtime);
  return { runtime, reason: null };
}

export class MotionExtractor {
  static async create(graphBytes, side) {
    const session = await ort.InferenceSession.create(graphBytes, {
      executionProviders: ['wasm'], graphOptimizationLevel: 'all',
    });
    return new MotionExtractor(session, side);
  }

  constructor(session, side) {
    this.session = session;
    this.side = side;
    this.wantsExpression = session.inputNames.includes('expression');
  }

  /** Crop as float32 CHW in [0, 1] (+ expression features) → Float32Array [6 + 3K]. */
  async run(chw, expression) {
    const feeds = { image: new ort.Tensor('float32', chw, [1, 3, this.side, this.side]) };
    if (this.wantsExpression) feeds.expression = new ort.Tensor('float32', expression, [1, expression.length]);
    const out = await this.session.run(feeds);
    const parts = ['yaw', 'pitch', 'roll', 't', 'delta'].map((name) => out[name].data);
    const vector = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      vector.set(part, at);
      at += part.length;
    }
    return vector;
  }
}
