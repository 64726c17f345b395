// The keypoint transform the receiver runs outside the graphs (adasr/keypoints.py): x = R(yaw, pitch, roll)·x_c +
// t + δ, and the relative motion transfer x_s + (x_d − x_ref). Keypoints are Float32Array [K·3], row-major.

/** The released model's π (adasr.keypoints.OFFICIAL_PI): its angles were trained with it. */
const OFFICIAL_PI = 3.14;

/** Degrees → R = Rx(pitch)·Ry(yaw)·Rz(roll), row-major [9]. */
export function rotation(yaw, pitch, roll) {
  const [y, p, r] = [yaw, pitch, roll].map((a) => (a / 180) * OFFICIAL_PI);
  const rx = [1, 0, 0, 0, Math.cos(p), -Math.sin(p), 0, Math.sin(p), Math.cos(p)];
  const ry = [Math.cos(y), 0, Math.sin(y), 0, 1, 0, -Math.sin(y), 0, Math.cos(y)];
  const rz = [Math.cos(r), -Math.sin(r), 0, Math.sin(r), Math.cos(r), 0, 0, 0, 1];
  const times = (a, b) => Array.from({ length: 9 }, (_, i) => {
    const [row, col] = [Math.floor(i / 3), i % 3];
    return a[3 * row] * b[col] + a[3 * row + 1] * b[3 + col] + a[3 * row + 2] * b[6 + col];
  });
  return times(times(rx, ry), rz);
}

/** x_c [K·3] and a motion vector [6 + 3K] (yaw, pitch, roll, t, δ) → R·x_c + t + δ, Float32Array [K·3]. */
export function transformKeypoints(xc, motion) {
  const rot = rotation(motion[0], motion[1], motion[2]);
  const out = new Float32Array(xc.length);
  for (let k = 0; k < xc.length / 3; k += 1) {
    for (let i = 0; i < 3; i += 1) {
      const rotated = rot[3 * i] * xc[3 * k] + rot[3 * i + 1] * xc[3 * k + 1] + rot[3 * i + 2] * xc[3 * k + 2];
      out[3 * k + i] = rotated + motion[3 + i] + motion[6 + 3 * k + i];
    }
  }
  return out;
}

/** x_d for a motion: relative to ``reference`` (x_s + x_d − x_ref) when given, else x_d itself. */
export function drivingKeypoints(xc, kpSource, motion, reference = null) {
  const driving = transformKeypoints(xc, motion);
  if (reference === null) return driving;
  const ref = transformKeypoints(xc, reference);
  return driving.map((v, i) => v - ref[i] + kpSource[i]);
}
