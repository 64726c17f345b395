// What the page hears of the other side's voice: its level and strongest frequency, read from the received track
// with a WebAudio AnalyserNode (the figures say the voice plays, not only that its packets arrive). Chromium feeds
// a remote WebRTC track to WebAudio only while a media element plays it too: the page's <audio> element does.

const FFT_SIZE = 4096;
const READ_MS = 250;

/** The strongest bin of a spectrum (dB per bin) as a frequency in Hz. */
export function peakFrequency(spectrumDb, sampleRate) {
  let best = 1; // bin 0 is the DC offset
  for (let i = 2; i < spectrumDb.length; i += 1) if (spectrumDb[i] > spectrumDb[best]) best = i;
  return (best * sampleRate) / (2 * spectrumDb.length);
}

/** Root mean square of samples in [-1, 1]. */
export function rms(samples) {
  let sum = 0;
  for (const v of samples) sum += v * v;
  return Math.sqrt(sum / samples.length);
}

export class VoiceMeter {
  /** Start listening to ``track`` (a MediaStreamTrack of audio). */
  constructor(track) {
    this.context = new AudioContext();
    this.analyser = new AnalyserNode(this.context, { fftSize: FFT_SIZE });
    this.context.createMediaStreamSource(new MediaStream([track])).connect(this.analyser);
    this.context.resume(); // suspended until a gesture where the browser's autoplay policy asks for one
    this.samples = new Float32Array(FFT_SIZE);
    this.spectrum = new Float32Array(FFT_SIZE / 2);
    this.loudest = { rms: 0, peakHz: null };
    this.reads = 0;
    this.timer = setInterval(() => this.read(), READ_MS);
  }

  read() {
    this.analyser.getFloatTimeDomainData(this.samples);
    this.reads += 1;
    const level = rms(this.samples);
    if (level > this.loudest.rms) {
      this.analyser.getFloatFrequencyData(this.spectrum);
      this.loudest = { rms: level, peakHz: peakFrequency(this.spectrum, this.context.sampleRate) };
    }
  }

  /** The loudest moment heard so far: its RMS and strongest frequency; the AudioContext's state. */
  figures() {
    return { ...this.loudest, reads: this.reads, contextState: this.context.state };
  }

  close() {
    clearInterval(this.timer);
    this.context.close();
  }
}
