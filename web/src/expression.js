// The driver's expression as a few landmark ratios (adasr/expression_signal.py): mouth, eye and brow distances
// measured in the face's own frame, centred on a neutral face and scaled to order one. The motion extractor graph
// of a model with an expression mapper takes them as its second input, "expression"; unscaled, they travel in each
// MOTION to the receiver's expression rig (rig.js).

const EYE_OUTER = [33, 263];
const INNER_UPPER_LIP = [82, 13, 312];
const INNER_LOWER_LIP = [87, 14, 317];
const OUTER_UPPER_LIP = [0];
const OUTER_LOWER_LIP = [17];
const MOUTH_CORNERS = [61, 291];
const EYES = {
  right: { corners: [33, 133], upper: [159, 158, 160], lower: [145, 144, 153] },
  left: { corners: [263, 362], upper: [386, 385, 387], lower: [374, 373, 380] },
};
const BROWS = { right: [52, 65, 105], left: [282, 295, 334] };
const NEUTRAL = [0.05, 0.60, 0.25, 0.0, 0.28, 0.28, 0.24, 0.24];
const SPREAD = [0.07, 0.065, 0.08, 0.03, 0.10, 0.10, 0.06, 0.06];
export const NUM_FEATURES = NEUTRAL.length;

/** Landmarks [{x, y}] (478, any pixel scale) → the unscaled mouth, eye and brow ratios, Float32Array [NUM_FEATURES]
 * (adasr.expression_signal.raw_ratios): what a MOTION carries for the receiver's expression rig. */
export function rawRatios(points) {
  const [right, left] = [points[EYE_OUTER[0]], points[EYE_OUTER[1]]];
  const iod = Math.max(Math.hypot(left.x - right.x, left.y - right.y), 1e-6);
  const ax = [(left.x - right.x) / iod, (left.y - right.y) / iod];
  const ay = [-ax[1], ax[0]]; // image-down when the head is upright
  const down = (indices) => {
    let [x, y] = [0, 0];
    for (const i of indices) { x += points[i].x; y += points[i].y; }
    return ((x / indices.length) * ay[0] + (y / indices.length) * ay[1]) / iod;
  };
  const dist = (i, j) => Math.hypot(points[i].x - points[j].x, points[i].y - points[j].y);
  const innerUpper = down(INNER_UPPER_LIP);
  const innerLower = down(INNER_LOWER_LIP);
  const raw = [
    Math.max(innerLower - innerUpper, 0),
    dist(...MOUTH_CORNERS) / iod,
    down(OUTER_LOWER_LIP) - down(OUTER_UPPER_LIP),
    (innerUpper + innerLower) / 2 - down(MOUTH_CORNERS),
  ];
  for (const side of ['right', 'left']) {
    const { corners, upper, lower } = EYES[side];
    raw.push((down(lower) - down(upper)) / Math.max(dist(...corners) / iod, 1e-6));
  }
  for (const side of ['right', 'left']) {
    const { corners, upper, lower } = EYES[side];
    raw.push(down([...corners, ...upper, ...lower]) - down(BROWS[side]));
  }
  return Float32Array.from(raw);
}

/** Landmarks [{x, y}] (478, any pixel scale) → the expression input, Float32Array [NUM_FEATURES]. */
export function expressionFeatures(points) {
  return rawRatios(points).map((v, i) => (v - NEUTRAL[i]) / SPREAD[i]);
}
