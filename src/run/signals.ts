/**
 * Ctrl-C for long runs: the first SIGINT asks the run to stop at the next
 * step boundary (the caller checkpoints there and exits 130); it never loses
 * work by itself.
 *
 * A terminal's Ctrl-C signals the whole foreground process group, and a
 * script runner (`npm run`, `bun run`) in that group forwards it to its
 * child as well, so one key press can arrive as two SIGINTs a few
 * milliseconds apart. Any SIGINT within `windowMs` of the first is therefore
 * the same request. A SIGINT after that window is a deliberate second
 * Ctrl-C: quit at once without a checkpoint (exit 130). SIGQUIT (Ctrl-\)
 * always quits at once (exit 131). Each case is said on stderr.
 */

export const SECOND_SIGINT_WINDOW_MS = 2000;

export interface InterruptOptions {
  /** Where the messages go (stderr in the CLI). */
  log: (s: string) => void;
  /** SIGINTs this soon after the first are the same request. */
  windowMs?: number;
  /** What the run would lose by quitting now, for the message (e.g. "the last checkpoint is ..."). */
  whereSaved?: () => string;
  /** Called for an immediate quit instead of process.exit (tests). */
  exit?: (code: number) => void;
  /** What the first Ctrl-C will do, for its message (default: a training run's "finishing this step, then saving a checkpoint"). */
  firstStop?: string;
}

export interface InterruptWatch {
  /** A stop was asked for (Ctrl-C or `request()`): stop at the next step boundary. */
  readonly requested: boolean;
  /** Said when quitting at once: where the last checkpoint is (set by the run as it saves). */
  whereSaved?: () => string;
  /** Ask for a stop as a Ctrl-C would (tests, hooks). */
  request(): void;
  /** Stop listening. */
  dispose(): void;
}

export function watchInterrupts(o: InterruptOptions): InterruptWatch {
  const windowMs = o.windowMs ?? SECOND_SIGINT_WINDOW_MS;
  const exit = o.exit ?? ((code: number) => process.exit(code));
  const saved = () => (watch.whereSaved ? `; ${watch.whereSaved()}` : "");
  let first = -1;
  let echoed = false;
  let requested = false;
  const onInt = () => {
    const now = performance.now();
    if (first < 0) {
      first = now;
      requested = true;
      o.log(`\nCtrl-C: ${o.firstStop ?? "finishing this step, then saving a checkpoint and stopping (exit 130)"}. Ctrl-C again after ${windowMs / 1000} s, or Ctrl-\\, quits at once without one.`);
      return;
    }
    if (now - first < windowMs) {
      if (!echoed) o.log(`Ctrl-C again within ${windowMs / 1000} s: taken as the same request (a script runner forwards the terminal's Ctrl-C); still stopping at the next step boundary`);
      echoed = true;
      return;
    }
    o.log(`\nsecond Ctrl-C: quitting now without a checkpoint${saved()}`);
    exit(130);
  };
  const onQuit = () => {
    o.log(`\nSIGQUIT: quitting now without a checkpoint${saved()}`);
    exit(131);
  };
  process.on("SIGINT", onInt);
  process.on("SIGQUIT", onQuit);
  const watch: InterruptWatch = {
    whereSaved: o.whereSaved,
    get requested() {
      return requested;
    },
    request() {
      requested = true;
    },
    dispose() {
      const remove = () => {
        process.off("SIGINT", onInt);
        process.off("SIGQUIT", onQuit);
      };
      const left = first < 0 ? 0 : windowMs - (performance.now() - first);
      if (left <= 0) return remove();
      // The run ended inside the window: a runner's echo of that Ctrl-C may still be on its
      // way, and without a handler it would kill the process while it finishes its files.
      echoed = true;
      const t = setTimeout(remove, left);
      (t as { unref?: () => void }).unref?.();
    },
  };
  return watch;
}
