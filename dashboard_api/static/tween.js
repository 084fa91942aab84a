// Numbers that count up (or down) to their new value, with a brief highlight, when they change.

const DURATION_MS = 900;

function ease(t) {
  return 1 - Math.pow(1 - t, 3);
}

/**
 * Show a KPI value in an element. data-value keeps the exact raw value (tests and tooltips read it);
 * when `animate` and the value changed, the text counts from the old to the new value and flashes.
 */
export function showValue(element, value, format, animate = true) {
  const raw = value === null || value === undefined ? "" : String(value);
  const previous = element.dataset.value;
  if (previous === raw && element.textContent !== "") return;
  element.dataset.value = raw;
  const target = format(value);
  const from = Number(previous);
  const to = Number(raw);
  const canTween = animate && previous !== undefined && previous !== "" && raw !== "" && Number.isFinite(from) && Number.isFinite(to);
  if (element._tween) {
    cancelAnimationFrame(element._tween.frame);
    clearTimeout(element._tween.timer);
    element._tween = null;
  }
  if (!canTween || from === to) {
    element.textContent = target;
  } else {
    const started = performance.now();
    const tween = { frame: 0, timer: 0 };
    const step = (now) => {
      const t = Math.min(1, (now - started) / DURATION_MS);
      if (t >= 1) {
        element.textContent = target;
        return;
      }
      element.textContent = format(from + (to - from) * ease(t));
      tween.frame = requestAnimationFrame(step);
    };
    tween.frame = requestAnimationFrame(step);
    // Land on the exact value even where animation frames do not run (a hidden tab).
    tween.timer = setTimeout(() => {
      cancelAnimationFrame(tween.frame);
      element.textContent = target;
      element._tween = null;
    }, DURATION_MS + 50);
    element._tween = tween;
  }
  if (animate && previous !== undefined && previous !== raw) flash(element);
}

const FLASH_GAP_MS = 4000;

/**
 * Briefly underline an element that changed. A figure that changes all the time (calls at 20 events/s)
 * is marked at most once every few seconds, so the wall never looks stuck in a highlight.
 */
export function flash(element) {
  const now = performance.now();
  if (element._flashedAt !== undefined && now - element._flashedAt < FLASH_GAP_MS) return;
  element._flashedAt = now;
  element.classList.remove("flash");
  void element.offsetWidth;
  element.classList.add("flash");
}
