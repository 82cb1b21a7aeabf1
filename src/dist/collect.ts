/**
 * One round of distributed generation, as the learner and the bench both run
 * it: publish the requests, then read the run's completions stream and yield
 * exactly one completion per request, as they arrive.
 *
 * - A completion counts once (a second one of the same request id: a worker
 *   presumed dead that finished after all, a request re-claimed or re-issued,
 *   is counted as a duplicate and dropped); one that is malformed, for
 *   another run, of a version `accept` refuses, or of no request of this
 *   round is logged and dropped.
 * - The broker restarted (its `epoch` moved): the caller's announcement is
 *   made again (a broker that lost its data lost it too), then every request
 *   not yet answered whose entry the broker no longer holds is published
 *   again. Requests it still holds (persistence kept them) are left to the
 *   workers, pending ones included.
 * - On the way out (the round done, or the caller stopped early) the round's
 *   unanswered requests are deleted, so no worker serves an abandoned round,
 *   and the completions read are trimmed from the stream.
 */
import type { Broker, CompletionMsg, RequestMsg } from "./broker.ts";

export interface RoundRecord {
  version: number;
  /** Request ids whose completions were accepted (each exactly once). */
  accepted: string[];
  duplicates: number;
  rejected: number;
  /** Requests published again after the broker restarted without them. */
  reissued: number;
}

export interface CollectOptions {
  broker: Broker;
  run: string;
  version: number;
  requests: RequestMsg[];
  /** Make the caller's weight announcement again (after a broker restart). */
  announce: () => Promise<void>;
  /** Why a completion of this version may not be used (null: it may). Default: only `version` itself (on-policy). */
  versionRejected?: (v: number) => string | null;
  /** A completion's checks beyond the schema (the bench: no more tokens than asked), null when fine. */
  check?: (c: CompletionMsg, r: RequestMsg) => string | null;
  log: (s: string) => void;
  /** Who is waiting, for log lines ("learner", "bench"). */
  who: string;
  /** Say how many completions are still missing every this many ms (default 10 s). */
  waitLogMs?: number;
  /** Give up after this long without a new completion (default: wait for workers indefinitely). */
  timeoutMs?: number;
}

export function emptyRecord(version: number): RoundRecord {
  return { version, accepted: [], duplicates: 0, rejected: 0, reissued: 0 };
}

/** Yields each request's one accepted completion; `rec` counts what happened. */
export async function* collect(o: CollectOptions, rec: RoundRecord): AsyncGenerator<{ c: CompletionMsg; r: RequestMsg }> {
  const { broker, run, log, who } = o;
  const byId = new Map(o.requests.map((r) => [r.id, r]));
  const versionRejected = o.versionRejected ?? ((v) => (v === o.version ? null : `it came from version ${v}, the policy is at ${o.version} (on-policy)`));
  let epoch = broker.epoch;
  const entryIds = await broker.publishRequests(o.requests);
  const entryOf = new Map(o.requests.map((r, i) => [r.id, entryIds[i]]));
  const done = new Set<string>();
  let after = "0-0";
  let lastNews = performance.now();
  let lastLog = lastNews;
  try {
    while (done.size < o.requests.length) {
      const { entries, last } = await broker.completions(run, after, 1000);
      after = last;
      for (const e of entries) {
        const drop = (why: string) => {
          rec.rejected++;
          log(`${who}: dropped completion ${e.id}: ${why}`);
        };
        if (!e.msg) drop(e.error);
        else if (e.msg.run !== run) drop(`it is for run ${e.msg.run}`);
        else if (!byId.has(e.msg.id)) drop(`request ${e.msg.id} is not one of this round's`);
        else if (done.has(e.msg.id)) rec.duplicates++; // idempotent by request id
        else {
          const why = versionRejected(e.msg.version) ?? o.check?.(e.msg, byId.get(e.msg.id)!);
          if (why) drop(`request ${e.msg.id}: ${why}`);
          else {
            done.add(e.msg.id);
            rec.accepted.push(e.msg.id);
            lastNews = performance.now();
            yield { c: e.msg, r: byId.get(e.msg.id)! };
          }
        }
      }
      if (broker.epoch !== epoch) {
        epoch = broker.epoch;
        rec.reissued += await reissue(o, done, entryOf);
      }
      const now = performance.now();
      if (now - lastLog > (o.waitLogMs ?? 10_000)) {
        lastLog = now;
        const ws = await broker.workers();
        log(`${who}: ${done.size} of ${o.requests.length} completions of version ${o.version}; ${ws.length ? `workers: ${ws.map((w) => `${w.name} (${w.pending} pending, idle ${(w.idle / 1000).toFixed(0)} s)`).join(", ")}` : "no worker has joined the broker yet: start one with `siri worker --broker URL`"}`);
      }
      if (o.timeoutMs !== undefined && now - lastNews > o.timeoutMs) {
        throw new Error(`${who}: no completion for ${(o.timeoutMs / 1000).toFixed(0)} s; ${done.size} of ${o.requests.length} arrived for version ${o.version}; are workers running against ${broker.url}?`);
      }
    }
  } finally {
    // Unanswered requests of an abandoned round must not be served later; read completions are not needed again.
    await broker.discard(o.requests.filter((r) => !done.has(r.id)).map((r) => entryOf.get(r.id)!));
    if (after !== "0-0") await broker.dropCompletions(run, after);
  }
}

/** After a broker restart: announce again, then publish again each unanswered request the broker no longer holds. */
async function reissue(o: CollectOptions, done: Set<string>, entryOf: Map<string, string>): Promise<number> {
  await o.announce();
  const open = o.requests.filter((r) => !done.has(r.id));
  const held = await o.broker.held(open.map((r) => entryOf.get(r.id)!));
  const lost = open.filter((_, i) => !held[i]);
  const ids = await o.broker.publishRequests(lost);
  lost.forEach((r, i) => entryOf.set(r.id, ids[i]));
  o.log(`${o.who}: the broker restarted: weights of version ${o.version} announced again; ${lost.length} of ${open.length} unanswered requests re-issued (the broker still held ${open.length - lost.length})`);
  return lost.length;
}
