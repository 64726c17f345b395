// Runs the page's graphs in onnxruntime-web (node, the wasm build the page runs) for tests/test_browser_peer.py
// to compare with Python's ONNX Runtime: the motion extractor (web/src/motion.js's graph) on the image (with the
// neutral expression for a model that takes one, as Python's extract_motion without landmarks), and
// web/src/render.js (source encoder, keypoints, renderer) for the motions given.
//   node tools/render_check.mjs GRAPHS_DIR CASE.json OUT_DIR
// CASE.json: {side, image: "RGB file, side×side bytes", motions: [[6 + 3K]...], reference: [6 + 3K] | null,
// threads, and for the expression rig: num_anchors, rig: {anchors: [N·2], face_ratios: [8]} | null (the portrait's),
// face_ratios: [[8]...] | null (each motion's), reference_ratios: [8] | null}. Writes OUT_DIR/frames.f32 (N × 3 × side × side float32) and OUT_DIR/timing.json (with the image's
// motion as the extractor gives it).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import * as ort from 'onnxruntime-web';

import { NUM_FEATURES } from '../src/expression.js';
import { FaceRenderer } from '../src/render.js';

const [graphs, casePath, outDir] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(casePath, 'utf8'));
ort.env.wasm.numThreads = spec.threads ?? 1;
const side = spec.side;
const rgb = readFileSync(spec.image);
const chw = new Float32Array(3 * side * side);
for (let i = 0; i < side * side; i += 1) {
  for (let c = 0; c < 3; c += 1) chw[c * side * side + i] = rgb[3 * i + c] / 255;
}
const extractor = await ort.InferenceSession.create(readFileSync(join(graphs, 'motion_extractor.onnx')));
const feeds = { image: new ort.Tensor('float32', chw, [1, 3, side, side]) };
if (extractor.inputNames.includes('expression')) {  // a model with an expression mapper: the neutral expression, as
  feeds.expression = new ort.Tensor('float32', new Float32Array(NUM_FEATURES), [1, NUM_FEATURES]);  // Python's
}
const extracted = await extractor.run(feeds);
const imageMotion = ['yaw', 'pitch', 'roll', 't', 'delta'].flatMap((name) => Array.from(extracted[name].data));
const renderer = await FaceRenderer.create(ort, readFileSync(join(graphs, 'renderer.onnx')), side, spec.num_anchors,
  readFileSync(join(graphs, 'source_encoder.onnx')));
const t0 = performance.now();
const rig = spec.rig ? { anchors: Float32Array.from(spec.rig.anchors), faceRatios: Float32Array.from(spec.rig.face_ratios) }
  : null;
await renderer.setSource(chw, undefined, rig);
const encodeMs = performance.now() - t0;
const reference = spec.reference ? Float32Array.from(spec.reference) : null;
const referenceRatios = spec.reference_ratios ? Float32Array.from(spec.reference_ratios) : null;
const frames = [];
const renderMs = [];
for (const [i, motion] of spec.motions.entries()) {
  const t = performance.now();
  const ratios = spec.face_ratios ? Float32Array.from(spec.face_ratios[i]) : null;
  frames.push(Float32Array.from(await renderer.render(Float32Array.from(motion), reference, ratios, referenceRatios)));
  renderMs.push(performance.now() - t);
}
const all = new Float32Array(frames.length * 3 * side * side);
frames.forEach((f, i) => all.set(f, i * f.length));
writeFileSync(join(outDir, 'frames.f32'), Buffer.from(all.buffer));
writeFileSync(join(outDir, 'timing.json'), JSON.stringify({ encode_ms: encodeMs, render_ms: renderMs, image_motion: imageMotion }));
