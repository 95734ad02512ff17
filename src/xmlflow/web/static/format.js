// Pure formatting helpers: no DOM, no network.

const SIZE_UNITS = ["B", "KB", "MB", "GB", "TB"];

/** 1536 -> "1.5 KB"; null -> "". */
export function formatSize(bytes) {
  if (bytes == null || Number.isNaN(bytes)) return "";
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < SIZE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${SIZE_UNITS[unit]}`;
}

/** Seconds -> "0.42 s", "12 s", "2 min 05 s", "1 h 02 min". */
export function formatDuration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "";
  const s = Math.max(0, Number(seconds));
  if (s < 0.01) return "< 0.01 s";
  if (s < 10) return `${s.toFixed(s < 1 ? 2 : 1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const whole = Math.round(s);
  const pad = (n) => String(n).padStart(2, "0");
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${pad(whole % 60)} s`;
  return `${Math.floor(whole / 3600)} h ${pad(Math.floor((whole % 3600) / 60))} min`;
}

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** A Unix time in seconds -> "just now", "5 minutes ago", or a date for older ones. */
export function formatWhen(epochSeconds, nowMs = Date.now()) {
  if (!epochSeconds) return "";
  const ago = (nowMs - epochSeconds * 1000) / 1000;
  if (ago < 45) return "just now";
  if (ago < 3600) return relative.format(-Math.round(ago / 60), "minute");
  if (ago < 6 * 3600) return relative.format(-Math.round(ago / 3600), "hour");
  return dateTime.format(new Date(epochSeconds * 1000));
}

const LOCATION = /^line (\d+), column (\d+):\s*/i;

/** "line 3, column 7: mismatched tag" -> {where: "Line 3, column 7", text: "mismatched tag"}. */
export function splitLocation(message) {
  const text = String(message ?? "");
  const match = LOCATION.exec(text);
  if (!match) return { where: "", text };
  return { where: `Line ${match[1]}, column ${match[2]}`, text: text.slice(match[0].length) };
}

/** Server messages start in lower case ("no file: ..."); shown alone they read better capitalised. */
export function sentence(text) {
  const s = String(text ?? "").trim();
  if (!s) return "";
  const first = s[0].toUpperCase() + s.slice(1);
  return /[.!?…]$/.test(first) ? first : `${first}.`;
}

export function plural(count, word, many = `${word}s`) {
  return `${count} ${count === 1 ? word : many}`;
}

/** Bytes per second -> "8.4 MB/s"; null -> "". */
export function formatRate(bytesPerSecond) {
  if (bytesPerSecond == null || !Number.isFinite(bytesPerSecond)) return "";
  return `${formatSize(Math.max(0, bytesPerSecond))}/s`;
}

/** Seconds left -> "about 12 s left", "about 2 min 05 s left"; null -> "". */
export function formatEta(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  if (seconds < 1) return "less than a second left";
  return `about ${formatDuration(seconds)} left`;
}

/** "12.3 MB of 100 MB read · 8.4 MB/s · about 10 s left" (the parts known so far). */
export function formatReading(done, total, rate, eta) {
  const parts = [`${formatSize(done)} of ${formatSize(total)} read`, formatRate(rate), formatEta(eta)];
  return parts.filter(Boolean).join(" · ");
}
