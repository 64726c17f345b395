// The page: check the link's token, load the tracker, the motion extractor and the renderer, take a portrait,
// then call the receiver and drive the portrait with the camera, as `adasr send` does; when the receiver answers
// with its own face, render it (peer_face.js) and play its voice, held back for that face (voice_sync.js). `?auto=1` joins at once with a camera snapshot
// as the portrait (kiosks, tests); `?frames=N` hangs up after N motion packets (and, with `&watch=M`, once M of the
// other side's frames were rendered too); `?fps=F` caps the rate. window.adasr holds the page's state and figures
// for whoever drives it (the tests read it); window.adasrPeerSample() the last frame rendered of the other side.
import { FaceLandmarker, FilesetResolver } from '/mp/vision_bundle.mjs';

import { Call, CallError, monotonicUs, probe } from './call.js';
import { expressionFeatures, NUM_FEATURES, rawRatios } from './expression.js';
import { BoxSmoother, boxFromCenter, cropInto, MotionSmoother, rawBox, toChw, toRgb } from './face.js';
import { CheckedRenderer } from './checked_renderer.js';
import { configureRuntime, loadWebGpuRuntime, MotionExtractor, ort } from './motion.js';
import { PeerFace } from './peer_face.js';
import { FaceRenderer } from './render.js';
import { anchorsFromLandmarks } from './rig.js';
import { VoiceMeter } from './voice_meter.js';
import { VoiceSync } from './voice_sync.js';
import { Compression, imageBody, MotionFlags, SourceKind, sourcePayload, zlibCompress } from './wire.js';

const params = new URLSearchParams(location.search);
const options = {
  auto: params.get('auto') === '1',
  frames: Number(params.get('frames') ?? 0),
  watch: Number(params.get('watch') ?? 0),
  fps: Number(params.get('fps') ?? 30),
};
const token = new URLSearchParams(location.hash.slice(1)).get('token');
const $ = (id) => document.getElementById(id);
const state = window.adasr = {
  phase: 'starting', error: null, framesSent: 0, faceLost: 0, peerRendered: null,
  trackMs: [], extractMs: [], loopMs: [], crossOriginIsolated: window.crossOriginIsolated,
  downloadBytes: null, firstMotionMs: null, sourceBytes: null, ended: null,
  peerFace: null, // the other side's face: its counters, render times, first face, last error
  lipSync: null, // its voice against its face: offsets (ms, positive: the face lags), the voice's hold (voice_sync.js)
  peerVoice: null, // what the page heard of that voice: loudest RMS and its strongest frequency (voice_meter.js)
};
let peerFace = null;
let voiceMeter = null;

function notePeerFace() {
  if (peerFace === null) return;
  state.peerFace = { ...peerFace.stats, renderMs: peerFace.renderMs.slice(), firstFaceMs: peerFace.firstFaceAt,
    error: peerFace.error };
  state.lipSync = peerFace.sync?.figures() ?? null;
  state.renderer = peerFace.renderer.figures();
  state.peerVoice = voiceMeter?.figures() ?? null;
}

/** The renderer of the other side's face: on wasm, and on WebGPU too where the browser has an adapter, trusted once
 * its first frame matches wasm's (checked_renderer.js). */
async function checkedRenderer(graph, config, threads) {
  const create = (runtime, provider) => FaceRenderer.create(runtime, graph, config.image_size,
    config.rig_anchors.length, null, provider);
  const wasm = await create(ort, 'wasm');
  try {
    const { runtime, reason } = await loadWebGpuRuntime(threads);
    return new CheckedRenderer(wasm, runtime && await create(runtime, 'webgpu'), reason);
  } catch (error) {
    return new CheckedRenderer(wasm, null, `WebGPU could not load the renderer (${error.message})`);
  }
}

/** The other side's voice: played by the page's <audio> element, metered, and held for its face. */
function playPeerVoice(receiver) {
  const element = $('peer-voice');
  element.srcObject = new MediaStream([receiver.track]);
  element.play().catch((error) => { // no autoplay without a gesture here: let the person start it
    state.peerVoiceError = error.name;
    element.controls = true;
  });
  voiceMeter = new VoiceMeter(receiver.track);
  peerFace.sync = new VoiceSync(receiver);
  peerFace.sync.start();
}

function lipSyncText() {
  const sync = state.lipSync;
  if (!sync) return '';
  if (sync.unsupported) return ` · lip sync: ${sync.unsupported}`;
  if (sync.offsetMsP50 === null) return ' · lip sync: measuring';
  return ` · face − voice ${sync.offsetMsP50.toFixed(0)} ms (median; voice held ${(sync.targetMs ?? 0).toFixed(0)} ms)`;
}

/** The last frame rendered of the other side: its motion, reference, their face ratios and RGBA pixels (base64). */
window.adasrPeerSample = () => {
  const sample = peerFace?.sample;
  if (!sample) return null;
  let binary = '';
  for (let i = 0; i < sample.pixels.length; i += 0x8000) {
    binary += String.fromCharCode(...sample.pixels.subarray(i, i + 0x8000));
  }
  return { vector: sample.vector, reference: sample.reference, face_ratios: sample.faceRatios,
    reference_ratios: sample.referenceRatios, pixels: btoa(binary) };
};

function show(text, phase) {
  $('status').textContent = text;
  if (phase) state.phase = phase;
}

function fail(message) {
  state.error = message;
  show(message, 'failed');
  $('status').classList.add('error');
}

async function fetchPrivate(path) {
  const reply = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (!reply.ok) throw new CallError(`could not load ${path} (HTTP ${reply.status})`);
  return reply;
}

function median(values) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function showFigures() {
  const rate = (ms) => (ms ? (1000 / ms).toFixed(1) : '–');
  $('figures').textContent = `sent ${state.framesSent} motions (${state.faceLost} without a face) · ` +
    `tracker ${rate(median(state.trackMs))} fps · motion extractor ${rate(median(state.extractMs))} fps · ` +
    `loop ${rate(median(state.loopMs))} fps · rendered there: ${state.peerRendered ?? '–'}` +
    (peerFace ? ` · the other side: ${peerFace.stats.frames_rendered} frames, ` +
      `${rate(median(peerFace.renderMs))} fps render on ${peerFace.renderer.figures().provider}` : '');
  notePeerFace();
  $('figures').textContent += lipSyncText() + (state.renderer?.reason ? ` · ${state.renderer.reason}` : '');
}

/** A still of ``source`` (image or video) as a canvas at its natural size. */
function still(source, width, height) {
  const canvas = document.createElement('canvas');
  [canvas.width, canvas.height] = [width, height];
  canvas.getContext('2d').drawImage(source, 0, 0, width, height);
  return canvas;
}

/** The portrait's face crop at the model's size, RGB bytes, and its expression rig's {anchors, faceRatios}
 * (rig.js; ``anchorIndices``: config.json's "rig_anchors"); CallError when it has no face. */
function portraitCrop(landmarker, image, side, anchorIndices) {
  const result = landmarker.detect(image);
  if (!result.faceLandmarks.length) {
    throw new CallError('No face found in the portrait: pick a photo where your face is clearly visible.');
  }
  const points = result.faceLandmarks[0].map((p) => ({ x: p.x * image.width, y: p.y * image.height }));
  const canvas = $('portrait');
  [canvas.width, canvas.height] = [side, side];
  const box = boxFromCenter(rawBox(points));
  return { rgb: toRgb(cropInto(canvas, image, box)), rig: { anchors: anchorsFromLandmarks(points, box, anchorIndices),
    faceRatios: rawRatios(points) } };
}

function waitPortrait(camera) {
  return new Promise((resolve) => {
    $('portrait-step').hidden = false;
    $('snapshot').onclick = () => resolve(still(camera, camera.videoWidth, camera.videoHeight));
    $('portrait-file').onchange = async () => {
      const file = $('portrait-file').files[0];
      if (file) {
        const bitmap = await createImageBitmap(file);
        resolve(still(bitmap, bitmap.width, bitmap.height));
      }
    };
  });
}

/** Camera frames → MOTION packets until the call ends (or ``frames`` were sent): latest frame wins, no queue. */
async function stream(call, camera, landmarker, extractor, side) {
  const crop = $('crop');
  [crop.width, crop.height] = [side, side];
  const boxes = new BoxSmoother();
  const smoother = new MotionSmoother();
  const neutral = new Float32Array(NUM_FEATURES);
  let last = new Float32Array(6 + 3 * extractor.numKp);
  let lastRatios = null; // sent again while the face is lost
  let lastMs = null;
  let box = null;
  let ended = false;
  call.ended.then(() => { ended = true; });
  const enough = () => options.frames && call.stats.frames_sent >= options.frames
    && (peerFace?.stats.frames_rendered ?? 0) >= options.watch;
  while (!ended && !enough()) {
    const t0 = performance.now();
    const captureUs = monotonicUs();
    call.stats.frames_captured += 1;
    const result = landmarker.detectForVideo(camera, t0);
    const t1 = performance.now();
    state.trackMs.push(t1 - t0);
    const dt = lastMs === null ? 1 / options.fps : (t0 - lastMs) / 1000;
    lastMs = t0;
    if (result.faceLandmarks.length) {
      const points = result.faceLandmarks[0].map((p) => ({ x: p.x * camera.videoWidth, y: p.y * camera.videoHeight }));
      box = boxFromCenter(boxes.step(rawBox(points), dt));
      const pixels = cropInto(crop, camera, box);
      const expression = extractor.wantsExpression ? expressionFeatures(points) : neutral;
      const raw = await extractor.run(toChw(pixels, side), expression);
      state.extractMs.push(performance.now() - t1);
      last = smoother.step(raw, dt);
      lastRatios = rawRatios(points); // unsmoothed, as the Python sender's: mouth motion is fast
      call.sendMotion(last, MotionFlags.NONE, captureUs, lastRatios);
    } else {
      boxes.reset();
      smoother.reset();
      call.sendMotion(last, MotionFlags.FACE_LOST, captureUs, lastRatios);
    }
    state.firstMotionMs ??= performance.now();
    Object.assign(state, { framesSent: call.stats.frames_sent, faceLost: call.stats.face_lost_frames,
      peerRendered: call.peerStats?.frames_rendered ?? null, sendFps: call.fps });
    state.loopMs.push(performance.now() - t0);
    if (state.loopMs.length % 10 === 0) showFigures();
    const wait = 1000 / call.fps - (performance.now() - t0);
    await new Promise((resolve) => setTimeout(resolve, Math.max(wait, 0)));
  }
}

/** RTP packets of the other side's voice received so far (0: it sends none). */
async function audioPacketsReceived(pc) {
  let packets = 0;
  (await pc.getStats()).forEach((report) => {
    if (report.type === 'inbound-rtp' && report.kind === 'audio') packets += report.packetsReceived;
  });
  return packets;
}

function downloadBytes() {
  const entries = [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')];
  return entries.reduce((n, e) => n + (e.encodedBodySize || 0), 0);
}

async function main() {
  if (!token) throw new CallError('This link has no token. Open the whole link `adasr receive` printed ' +
    '(https://HOST:PORT/#token=…).');
  show('Checking the link…', 'probing');
  await probe(token);
  show('Loading the face tracker and the motion extractor…', 'loading');
  const config = await (await fetchPrivate('/call/config.json')).json();
  const [faceModel, graph, rendererGraph] = await Promise.all(
    ['/call/face_landmarker.task', '/call/motion_extractor.onnx', '/call/renderer.onnx']
      .map(async (path) => new Uint8Array(await (await fetchPrivate(path)).arrayBuffer())));
  const threads = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4));
  configureRuntime(threads);
  const fileset = await FilesetResolver.forVisionTasks('/mp/wasm');
  const landmarker = await FaceLandmarker.createFromOptions(fileset, {
    baseOptions: { modelAssetBuffer: faceModel, delegate: 'CPU' },
    runningMode: 'IMAGE', numFaces: 1,
    minFaceDetectionConfidence: 0.5, minFacePresenceConfidence: 0.5, minTrackingConfidence: 0.5,
  });
  const extractor = await MotionExtractor.create(graph, config.image_size);
  extractor.numKp = config.num_kp;
  peerFace = new PeerFace(await checkedRenderer(rendererGraph, config, threads), $('peer'), config);
  show('Allow the camera and the microphone…', 'media');
  const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: true })
    .catch((error) => {
      throw new CallError(error.name === 'NotAllowedError'
        ? 'The call needs your camera and microphone: allow them for this page, then reload it.'
        : `The camera or the microphone cannot be opened (${error.name}): is another program using it?`);
    });
  const camera = $('camera');
  camera.srcObject = media;
  await camera.play();
  show(options.auto ? 'Taking a snapshot as your portrait…' : 'Pick your portrait: a photo, or a snapshot.',
    'portrait');
  const image = options.auto ? still(camera, camera.videoWidth, camera.videoHeight) : await waitPortrait(camera);
  const portrait = portraitCrop(landmarker, image, config.image_size, config.rig_anchors);
  $('portrait-step').hidden = true;
  landmarker.setOptions({ runningMode: 'VIDEO' });
  show('Calling…', 'calling');
  const call = await Call.connect(token, media.getAudioTracks()[0], options.fps);
  call.peer.face.then(({ control, motion }) => peerFace.attach(control, motion));
  playPeerVoice(call.peer.voice);
  $('hangup').hidden = false;
  $('hangup').onclick = () => call.hangUp();
  const body = imageBody(portrait.rgb, config.image_size, config.image_size, portrait.rig);
  const payload = sourcePayload(body, Compression.ZLIB, await zlibCompress(body));
  const modelId = Uint8Array.from(config.model_id.match(/../g), (h) => parseInt(h, 16));
  state.sourceBytes = await call.sendSource(payload, modelId, SourceKind.SOURCE_IMAGE, config.max_message);
  show('In the call: your face drives your portrait on the other screen.', 'streaming');
  state.downloadBytes = downloadBytes();
  await stream(call, camera, landmarker, extractor, config.image_size);
  state.peerVoicePackets = await audioPacketsReceived(call.pc);
  if (options.frames) await call.hangUp('the page sent its frames');
  state.ended = await call.ended;
  state.peerRendered = call.peerStats?.frames_rendered ?? state.peerRendered;
  media.getTracks().forEach((track) => track.stop());
  showFigures();
  peerFace.sync.stop();
  voiceMeter.close();
  show(`The call ended: ${state.ended}.`, 'ended');
}

main().catch((error) => {
  console.error(error);
  fail(error instanceof CallError ? error.message : `The call failed: ${error.message ?? error}`);
});
