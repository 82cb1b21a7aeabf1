/**
 * One round of distributed generation, as the learner and the bench both run
 * it: publish the requests, then read the run's completions stream and yield
 * exactly one completion per request, as they arrive.
 *
 * - A completion counts once (a second one of the same request id: a worker
 *   presumed dead that finished after all, a request re-claimed or re-issued,
 *   is counted as a duplicate and dropped); one that is malformed, for
 *   another run, of a version `versionRejected` refuses, or of no request of
 *   this round (nor of another round the caller `keep`s) is logged and
 *   dropped.
 * - Bounded staleness (`renew`): a completion from weights older than the
 *   bound means a worker served (and deleted) its request with them; it is
 *   dropped with a log line and the request published again, renewed, so
 *   every request still ends with exactly one accepted completion.
 * - A prefetched round (`published`) was published earlier, possibly before
 *   a broker restart: that is checked for first, as if it happened now.
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
  /** The weight version that produced each accepted completion (in the order of `accepted`). */
  versions: number[];
  duplicates: number;
  rejected: number;
  /** Of the rejected: completions from weights older than the staleness bound, their requests published again. */
  stale: number;
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
  /** Bounded staleness: the request to publish again when a completion of it is refused for its version (absent: only dropped). */
  renew?: (r: RequestMsg) => RequestMsg;
  /** The requests were published already (a prefetched round): their stream entry ids, and the broker's epoch then. */
  published?: { entryIds: string[]; epoch: number };
  /** Completions of this round read while another round was being collected; judged first, like any other. */
  early?: CompletionMsg[];
  /** A completion of no request of this round: true when the caller takes it (one of another round in flight), so it is not dropped. */
  keep?: (c: CompletionMsg) => boolean;
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
  return { version, accepted: [], versions: [], duplicates: 0, rejected: 0, stale: 0, reissued: 0 };
}

/** Yields each request's one accepted completion; `rec` counts what happened. */
export async function* collect(o: CollectOptions, rec: RoundRecord): AsyncGenerator<{ c: CompletionMsg; r: RequestMsg }> {
  const { broker, run, log, who } = o;
  const byId = new Map(o.requests.map((r) => [r.id, r]));
  const versionRejected = o.versionRejected ?? ((v) => (v === o.version ? null : `it came from version ${v}, the policy is at ${o.version} (on-policy)`));
  let epoch = o.published?.epoch ?? broker.epoch;
  const entryIds = o.published?.entryIds ?? (await broker.publishRequests(o.requests));
  const entryOf = new Map(o.requests.map((r, i) => [r.id, entryIds[i]]));
  /** Every entry published for the round (a renewed request adds one): all are deleted on the way out. */
  const published = [...entryIds];
  const done = new Set<string>();
  let after = "0-0";
  let lastNews = performance.now();
  let lastLog = lastNews;
  /** The completion to yield, or null (dropped, counted). */
  const judge = async (id: string, e: { msg?: CompletionMsg; error?: string }): Promise<CompletionMsg | null> => {
    const drop = (why: string) => {
      rec.rejected++;
      log(`${who}: dropped completion ${id}: ${why}`);
      return null;
    };
    if (!e.msg) return drop(e.error ?? "no message");
    const c = e.msg;
    if (c.run !== run) return drop(`it is for run ${c.run}`);
    const r = byId.get(c.id);
    if (!r) return o.keep?.(c) ? null : drop(`request ${c.id} is not one of this round's`);
    if (done.has(c.id)) {
      rec.duplicates++; // idempotent by request id
      return null;
    }
    const old = versionRejected(c.version);
    const why = old ?? o.check?.(c, r);
    if (!why) return c;
    if (!old || !o.renew) return drop(`request ${c.id}: ${why}`);
    // Served with weights too old: no worker holds the request any more, so it goes out again.
    const again = o.renew(r);
    const [eid] = await broker.publishRequests([again]);
    byId.set(c.id, again);
    entryOf.set(c.id, eid);
    published.push(eid);
    rec.stale++;
    return drop(`request ${c.id}: ${why}; published again for version ${again.minVersion ?? again.version} or newer`);
  };
  const accept = (c: CompletionMsg) => {
    done.add(c.id);
    rec.accepted.push(c.id);
    rec.versions.push(c.version);
    lastNews = performance.now();
    return { c, r: byId.get(c.id)! };
  };
  try {
    for (const c of o.early ?? []) {
      const ok = await judge(`${c.id} (read earlier)`, { msg: c });
      if (ok) yield accept(ok);
    }
    while (done.size < o.requests.length) {
      if (broker.epoch !== epoch) {
        epoch = broker.epoch;
        rec.reissued += await reissue(o, [...byId.values()], done, entryOf, published);
      }
      const { entries, last } = await broker.completions(run, after, 1000);
      after = last;
      for (const e of entries) {
        const ok = await judge(e.id, e);
        if (ok) yield accept(ok);
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
    // No entry of the round may be served later (unanswered ones of an abandoned round, a renewed request's first one; served ones are gone already); read completions are not needed again.
    await broker.discard(published);
    if (after !== "0-0") await broker.dropCompletions(run, after);
  }
}

/** After a broker restart: announce again, then publish again each unanswered request the broker no longer holds. */
async function reissue(o: CollectOptions, requests: RequestMsg[], done: Set<string>, entryOf: Map<string, string>, published: string[]): Promise<number> {
  await o.announce();
  const open = requests.filter((r) => !done.has(r.id));
  const held = await o.broker.held(open.map((r) => entryOf.get(r.id)!));
  const lost = open.filter((_, i) => !held[i]);
  const ids = await o.broker.publishRequests(lost);
  lost.forEach((r, i) => entryOf.set(r.id, ids[i]));
  published.push(...ids);
  o.log(`${o.who}: the broker restarted: weights of version ${o.version} announced again; ${lost.length} of ${open.length} unanswered requests re-issued (the broker still held ${open.length - lost.length})`);
  return lost.length;
}
