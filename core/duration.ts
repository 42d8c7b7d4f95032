/**
 * Go-style durations ("8760h", "1h30m", "45s"), the unit nebula-cert and Keyhole's API both speak.
 * Only h, m and s are accepted; the result is whole seconds.
 */
import { KeyholeError } from "./errors.ts";

const PART = /(\d+(?:\.\d+)?)(h|m|s)/gy;
const UNIT_SECONDS = { h: 3600, m: 60, s: 1 } as const;

export function parseDuration(text: string): number {
  if (text === "0" || text === "0s") return 0;
  if (text.length === 0 || text.length > 32) throw invalid(text);
  PART.lastIndex = 0;
  let seconds = 0;
  let end = 0;
  for (let m = PART.exec(text); m !== null; m = PART.exec(text)) {
    const unit = m[2] as keyof typeof UNIT_SECONDS;
    seconds += Number(m[1]) * UNIT_SECONDS[unit];
    end = PART.lastIndex;
  }
  if (end !== text.length || !Number.isFinite(seconds)) throw invalid(text);
  return Math.floor(seconds);
}

export function formatDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return `${h ? `${h}h` : ""}${m ? `${m}m` : ""}${s || (!h && !m) ? `${s}s` : ""}`;
}

function invalid(text: string): KeyholeError {
  return new KeyholeError(
    "invalid_duration",
    `invalid duration ${JSON.stringify(text.slice(0, 40))}: use hours, minutes and seconds such as "8760h" or "1h30m"`,
  );
}
