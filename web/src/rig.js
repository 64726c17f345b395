// The expression rig's inputs (adasr/expression_rig.py): the portrait's lip, lid and brow landmarks as the renderer
// graph's "anchors", and the change of face ratios it asks of them, "ratio_change": the portrait's own ratios plus
// the driver's change since its reference frame (each eye's opening as a share of each face's open eye), minus the
// portrait's.
import { NUM_FEATURES } from './expression.js';

const MOUTH_OPEN = 0;
const EYES = [4, 5];
/** Most an eye opens beyond the portrait's own (adasr.expression_rig.MAX_EYE_WIDENING). */
const MAX_EYE_WIDENING = 1.3;
/** The smallest lid gap (over eye width) taken for a face's open eye (adasr.expression_rig.EYE_OPEN_FLOOR). */
const EYE_OPEN_FLOOR = Math.fround(0.2);

/** Landmarks [{x, y}] in pixels of the image they were found in, the square crop ``box`` ({x0, y0, size}) of it
 * and the anchors' landmark indices (adasr.expression_rig.ANCHORS: the receiver's config.json "rig_anchors") → the
 * anchors, Float32Array [indices.length · 2] in the renderer's normalised coordinates (−1…1 across the crop). */
export function anchorsFromLandmarks(points, box, indices) {
  return Float32Array.from(indices.flatMap((i) => [
    ((points[i].x - box.x0) / box.size) * 2 - 1, ((points[i].y - box.y0) / box.size) * 2 - 1]));
}

/** The ratios the rendered face should show (adasr.expression_rig.target_ratios): relative to the driver's
 * ``reference`` when given (an eye's opening as a share of each face's open eye, so a blink closes any eye), else
 * the driver's own; eyes never open past MAX_EYE_WIDENING times the portrait's, a mouth never below closed and
 * never narrower than the driver's own (a reference caught talking does not keep a closed portrait shut). */
export function targetRatios(source, driving, reference = null) {
  const target = reference === null ? Float32Array.from(driving)
    : Float32Array.from(source, (s, i) => s + (driving[i] - reference[i]));
  for (const i of EYES) {
    if (reference !== null) {
      const share = Math.fround(Math.max(driving[i], 0) / Math.max(reference[i], EYE_OPEN_FLOOR));
      target[i] = share * Math.max(source[i], EYE_OPEN_FLOOR);
    }
    target[i] = Math.min(Math.max(target[i], 0), Math.fround(source[i] * MAX_EYE_WIDENING));
  }
  target[MOUTH_OPEN] = Math.max(target[MOUTH_OPEN], driving[MOUTH_OPEN], 0);
  return target;
}

/** The graph's "ratio_change" [NUM_FEATURES]: zeros (nothing moves) when the portrait or the frame has no ratios. */
export function ratioChange(source, driving, reference = null) {
  if (source === null || driving === null) return new Float32Array(NUM_FEATURES);
  const target = targetRatios(source, driving, reference);
  return Float32Array.from(target, (t, i) => t - source[i]);
}
