/**
 * The one place that works around Bun's crash with dawn.node's event pump.
 *
 * Problem (measured with Bun 1.2.21, 1.3.14, 1.4.5): dawn.node processes GPU
 * events (buffer mapping, queue completion, device creation) by calling the
 * global `setImmediate` again and again while anything is outstanding. Under
 * Bun, when such a dawn.node promise stays pending across an event-loop turn
 * (any kernel that runs more than a few ms), the process segfaults at
 * address 0x28. Node runs the same code fine; `bun test` did not show it;
 * only a real CLI process does (tests/gpu_cli.test.ts spawns one).
 *
 * Fix: replace `setImmediate` before dawn.node is loaded with a pump that
 *  - while one of *our* GPU promises is pending (see `track`), runs dawn's
 *    callback on the microtask queue after a ~50 µs sleep (Atomics.wait), so
 *    the promise resolves without ever crossing an event-loop turn;
 *  - while nothing of ours is pending, parks dawn's callback instead of
 *    spinning. dawn.node keeps a tick queued for as long as the device lives
 *    (its `lost` promise), so spinning then would starve timers, signal
 *    handlers and I/O forever and keep the process from exiting.
 * Every dawn.node promise this project awaits must therefore go through
 * `track()`; an untracked one would wait on a parked pump.
 * Deferring through `setTimeout` instead was measured to crash as well.
 */

type Callback = () => void;

// Every callback handed to setImmediate while nothing of ours is pending: dawn's tick, and any
// other caller's (Bun's child-process and socket internals go through the global too). A single
// slot lost dawn's tick when another caller's callback overwrote it, and the next GPU wait hung
// forever (seen in a test process that had spawned a child); all are kept and run in order.
let parked: Callback[] = [];
let pending = 0;
let installed = false;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const SLEEP_MS = 0.05;

function spin(run: Callback): void {
  queueMicrotask(() => {
    Atomics.wait(sleeper, 0, 0, SLEEP_MS);
    run();
  });
}

/** Install the pump. Idempotent; must run before dawn.node is first used. */
export function installEventPump(): void {
  if (installed || process.env.SIRI_NO_EVENT_PUMP === "1") return;
  installed = true;
  const pump = (cb: (...a: unknown[]) => void, ...args: unknown[]) => {
    const run = () => cb(...args);
    if (pending > 0) spin(run);
    else parked.push(run);
    return 0;
  };
  (globalThis as { setImmediate: unknown }).setImmediate = pump;
}

/** Await a dawn.node promise with the pump running until it settles. */
export async function track<T>(promise: Promise<T>): Promise<T> {
  if (!installed) return promise; // Node, or the workaround disabled
  // A real event-loop turn at least every 50 ms, taken while dawn's tick is
  // still parked (nothing of ours is being pumped yet). Without it, a long
  // GPU loop runs for minutes on the microtask queue alone, and Bun 1.4.5
  // segfaulted after ~4 minutes of that (measured twice: a 330-step SFT loop
  // and the default training run, both at ~245 s, address 0xFFFFFFFFFFFFFFFF).
  if (pending === 0) await yieldToEventLoop();
  pending++;
  if (parked.length > 0) {
    const runs = parked;
    parked = [];
    for (const run of runs) spin(run);
  }
  try {
    return await promise;
  } finally {
    pending--;
  }
}

let lastTurn = 0;

/**
 * Give the event loop a real turn (timers, signal handlers, I/O) if none
 * was given in the last `everyMs`. Long GPU loops call this between steps:
 * while our promises are pending the pump runs on microtasks, so without it
 * a Ctrl-C handler would never run. Safe: nothing of ours is pending here,
 * and dawn's own tick stays parked across the turn.
 */
export async function yieldToEventLoop(everyMs = 50): Promise<void> {
  const now = performance.now();
  if (now - lastTurn < everyMs) return;
  await new Promise<void>((resolve) => setTimeout(resolve, 0));
  lastTurn = performance.now();
}
