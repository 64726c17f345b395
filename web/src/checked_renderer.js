// WebGPU is trusted only once it agrees with wasm. Where the browser has a WebGPU adapter the page builds the
// renderer on both execution providers, renders the first frame on both, and keeps WebGPU only if its frame matches
// wasm's to TRUST_PSNR_DB (the bound the tests hold the page's frames to against Python's): WebGPU kernels have
// diverged from the CPU's before (a GridSample in onnxruntime issue #32275). Until then, and after a disagreement,
// every frame comes from wasm. Same interface as FaceRenderer for what PeerFace uses.

export const TRUST_PSNR_DB = 30;

/** PSNR (dB) between two frames of values in [0, 1]. */
export function psnr(a, b) {
  if (a.length !== b.length) throw new RangeError(`frames of ${a.length} and ${b.length} values`);
  let sum = 0;
  for (let i = 0; i < a.length; i += 1) sum += (a[i] - b[i]) ** 2;
  return 10 * Math.log10(1 / Math.max(sum / a.length, 1e-12));
}

/** The largest difference between two frames' values (0: the same bits' worth). */
export function maxAbsDifference(a, b) {
  let most = 0;
  for (let i = 0; i < a.length; i += 1) most = Math.max(most, Math.abs(a[i] - b[i]));
  return most;
}

/** The verdict on WebGPU from one frame rendered on both: {provider, psnrDb, maxAbsDiff, reason}. */
export function judgeWebGpu(wasmFrame, gpuFrame, boundDb = TRUST_PSNR_DB) {
  const [psnrDb, maxAbsDiff] = [psnr(wasmFrame, gpuFrame), maxAbsDifference(wasmFrame, gpuFrame)];
  if (!(psnrDb >= boundDb)) { // NaN (a frame of NaNs) fails too
    return { provider: 'wasm', psnrDb, maxAbsDiff, reason: `WebGPU's frame differed from wasm's ` +
      `(${psnrDb.toFixed(1)} dB < ${boundDb} dB): rendering on wasm` };
  }
  return { provider: 'webgpu', psnrDb, maxAbsDiff, reason: `WebGPU's frame matched wasm's (${psnrDb.toFixed(1)} dB)` };
}

export class CheckedRenderer {
  /** ``wasm``, ``gpu``: FaceRenderers of the same graph on each provider (``gpu`` null: ``unavailable`` says
   * why). */
  constructor(wasm, gpu, unavailable = null) {
    Object.assign(this, { wasm, gpu });
    this.verdict = gpu === null ? { provider: 'wasm', psnrDb: null, reason: unavailable } : null;
  }

  get side() { return this.wasm.side; }

  get source() { return this.active()[0].source; }

  /** The renderers that need the state: both until the verdict, then the one trusted. */
  active() {
    if (this.verdict === null) return [this.wasm, this.gpu];
    return [this.verdict.provider === 'webgpu' ? this.gpu : this.wasm];
  }

  /** f_s as values and shape: each renderer makes its own tensor of it (the two runtimes' tensors differ). */
  volume(values, shape) {
    return { values, shape };
  }

  setState(volume, xc, motion, rig = null) {
    for (const renderer of this.active()) {
      renderer.setState(renderer.volume(volume.values, volume.shape), xc, motion, rig);
    }
    return this.source;
  }

  /** One frame (FaceRenderer.render's arguments); the first one on both providers, judged. */
  async render(...args) {
    if (this.verdict !== null) return this.active()[0].render(...args);
    const frame = await this.wasm.render(...args);
    try {
      this.verdict = judgeWebGpu(frame, await this.gpu.render(...args));
    } catch (error) {
      this.verdict = { provider: 'wasm', psnrDb: null, reason: `WebGPU failed to render (${error.message}): ` +
        'rendering on wasm' };
    }
    return frame;
  }

  /** What the page reports: the provider in use, the check's PSNR, and why. */
  figures() {
    return this.verdict ?? { provider: 'wasm', psnrDb: null, reason: 'WebGPU not checked yet (no frame rendered)' };
  }
}
