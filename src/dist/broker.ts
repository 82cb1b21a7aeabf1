/**
 * The message broker between a learner (`siri train --broker`) and its
 * rollout workers (`siri worker`), behind this one module.
 *
 * Why Redis Streams: a widely deployed broker (Debian's `redis-server`, one
 * binary, no cluster to set up) whose consumer groups give exactly what the
 * rollouts need: each request goes to one worker, stays pending until that
 * worker acknowledges it, and XAUTOCLAIM hands the pending requests of a
 * worker that went silent (killed, hung) to another after a visibility
 * timeout. Bun has a Redis client built in (`Bun.RedisClient`), so there is
 * no new dependency; every command goes through `send`.
 *
 * Keys (under a prefix, default "siri"):
 *   <p>:requests              stream, consumer group "workers": generation requests
 *   <p>:completions:<run>     stream: completions of one learner run (the learner reads it)
 *   <p>:weights               stream: weight-version announcements (workers read the newest)
 *   <p>:alive:<worker>        string with a time to live: a worker's heartbeat (presence), refreshed
 *                             every HEARTBEAT_MS, deleted when it stops; gone PRESENCE_TTL_MS after a crash
 *
 * Every message is one JSON field "m" carrying the message format (`proto`),
 * checked against its schema on receipt; a malformed one is reported to the
 * caller (which logs and drops it), never thrown.
 *
 * Memory stays bounded: a worker deletes a request once it has published its
 * completion (XACK + XDEL), the learner trims its completions stream after
 * each round and deletes it at the end, and the weights stream keeps its
 * newest WEIGHTS_KEPT announcements.
 *
 * A lost connection (the broker restarted, a network cut) is retried with
 * back-off, said in the log, and counted in `epoch`; callers that must redo
 * something after a restart (the learner re-announces its weights and
 * re-issues the requests the broker lost) compare `epoch` before and after.
 */
import { RedisClient } from "bun";
import type { EngineOptions, SamplingOptions } from "../engine/generate.ts";
import type { DType } from "../engine/model.ts";

export const GROUP = "workers";
/** The message format this code speaks; a message of another is rejected (a worker and a learner of different siri versions). */
export const PROTO = 1;
/** Weight announcements kept in the stream (workers only read the newest). */
export const WEIGHTS_KEPT = 16;
/** A worker's presence key lives this long without a refresh (ms): a crashed worker counts as gone after it. */
export const PRESENCE_TTL_MS = 15_000;
/** How often a worker refreshes its presence key (ms); well under the TTL, so a busy event loop does not drop it. */
export const HEARTBEAT_MS = 3_000;
/** Longest wait between two reconnection attempts (ms). */
export const MAX_BACKOFF_MS = 5_000;

/** One generation request: one rollout of one prompt at one weight version. */
export interface RequestMsg {
  kind: "request";
  proto: typeof PROTO;
  run: string;
  version: number;
  /** Unique within the run (step.round.index); completions are keyed by it. */
  id: string;
  prompt: number[];
  maxTokens: number;
  stop: number[];
  /** The request's random stream key (its index in the local batch, so local and distributed draw the same). */
  key: number;
  sampling: SamplingOptions;
  /**
   * Bounded staleness: weights of any version from this one up may serve it
   * (the learner accepts their completions). Absent: on-policy, only
   * `version` itself.
   */
  minVersion?: number;
}

export interface CompletionMsg {
  kind: "completion";
  proto: typeof PROTO;
  run: string;
  version: number;
  id: string;
  tokens: number[];
  logprobs: number[];
  stopReason: "stop" | "length";
  worker: string;
}

/** Engine sizing left to each worker's adapter (its largest storage binding sets the cache): the bench, whose coordinator needs no GPU. */
export interface EngineSizingMsg {
  maxBatch: number;
  promptTokens: number;
  newTokens: number;
  cacheTokens?: number;
  prefillChunk: number;
  /** Ids the tokenizer knows: required, so a worker never samples a padded row. */
  vocabLimit: number;
}

/** Rollout weights of one version, in a folder on storage the workers share. */
export interface WeightsMsg {
  kind: "weights";
  proto: typeof PROTO;
  run: string;
  version: number;
  /** Folder with config.json and model.safetensors (absolute path), or its s3:// URL (src/dist/weights.ts). */
  dir: string;
  /** "auto": f16 where the worker's adapter has it (the bench's default, as in a single-process bench). */
  dtype: DType | "auto";
  /** The learner's engine options: the same numerics (decode chunk, LM-head path) give the same completions. */
  engine?: EngineOptions;
  /** Or the sizing each worker applies to its own adapter (maxBatch, hence the LM-head path, is fixed by it). */
  sizing?: EngineSizingMsg;
}

export type Msg = RequestMsg | CompletionMsg | WeightsMsg;

const isInt = (x: unknown): x is number => Number.isInteger(x);
const isNum = (x: unknown): x is number => typeof x === "number";
const ints = (x: unknown): x is number[] => Array.isArray(x) && x.every(isInt);
const isStr = (x: unknown): x is string => typeof x === "string" && x.length > 0;
const positive = (o: Record<string, unknown>, keys: string[], optional: string[] = []) =>
  keys.every((k) => isInt(o[k]) && (o[k] as number) > 0) && optional.every((k) => o[k] === undefined || (isInt(o[k]) && (o[k] as number) > 0));

/** The reason `m` is not a valid message of `kind`, or null. */
export function checkMsg(kind: Msg["kind"], m: unknown): string | null {
  if (typeof m !== "object" || m === null) return "not a JSON object";
  const o = m as Record<string, unknown>;
  if (o.kind !== kind) return `kind is ${JSON.stringify(o.kind)}, expected "${kind}"`;
  if (o.proto !== PROTO) return `proto is ${JSON.stringify(o.proto)}, this siri speaks message format ${PROTO} (run the same siri version on the learner and every worker)`;
  if (!isStr(o.run)) return "run: expected a non-empty string";
  if (!isInt(o.version) || (o.version as number) < 0) return "version: expected an integer >= 0";
  if (kind === "request") {
    if (!isStr(o.id)) return "id: expected a non-empty string";
    if (!ints(o.prompt) || !(o.prompt as number[]).length) return "prompt: expected a non-empty array of token ids";
    if (!isInt(o.maxTokens) || (o.maxTokens as number) < 1) return "maxTokens: expected an integer >= 1";
    if (!ints(o.stop)) return "stop: expected an array of token ids";
    if (!isInt(o.key) || (o.key as number) < 0 || (o.key as number) > 0xffffffff) return "key: expected a u32";
    const s = o.sampling as Record<string, unknown> | undefined;
    if (!s || !isNum(s.temperature) || !isNum(s.topP) || !isInt(s.topK) || !isInt(s.seed)) return "sampling: expected {temperature, topP, topK, seed}";
    if (o.minVersion !== undefined && (!isInt(o.minVersion) || (o.minVersion as number) < 0 || (o.minVersion as number) > (o.version as number))) return "minVersion: expected an integer in 0..version";
  } else if (kind === "completion") {
    if (!isStr(o.id)) return "id: expected a non-empty string";
    if (!ints(o.tokens)) return "tokens: expected an array of token ids";
    if (!Array.isArray(o.logprobs) || !o.logprobs.every(isNum) || o.logprobs.length !== (o.tokens as number[]).length) return "logprobs: expected one number per token";
    if (o.stopReason !== "stop" && o.stopReason !== "length") return 'stopReason: expected "stop" or "length"';
    if (typeof o.worker !== "string") return "worker: expected a string";
  } else {
    if (!isStr(o.dir)) return "dir: expected a folder path";
    if (o.dtype !== "f16" && o.dtype !== "f32" && o.dtype !== "auto") return 'dtype: expected "f16", "f32" or "auto"';
    const e = o.engine as Record<string, unknown> | undefined;
    const z = o.sizing as Record<string, unknown> | undefined;
    if ((e === undefined) === (z === undefined)) return "engine or sizing: expected exactly one of them";
    if (e && (typeof e !== "object" || !positive(e, ["maxBatch", "maxSeqLen", "cacheTokens", "blockSize", "prefillChunk", "vocabLimit"], ["decodeChunk", "syncEvery"]))) return "engine: expected engine options (maxBatch, maxSeqLen, cacheTokens, blockSize, prefillChunk, vocabLimit)";
    if (z && (typeof z !== "object" || !positive(z, ["maxBatch", "promptTokens", "newTokens", "prefillChunk", "vocabLimit"], ["cacheTokens"]))) return "sizing: expected {maxBatch, promptTokens, newTokens, prefillChunk, vocabLimit}";
  }
  return null;
}

/** A stream entry: its id and the message, or why it was rejected. */
export type Entry<M> = { id: string; msg: M; error?: undefined } | { id: string; msg?: undefined; error: string };

type RawEntry = [string, string[]];

function parseEntry<M extends Msg>(kind: M["kind"], [id, fields]: RawEntry): Entry<M> {
  const i = Array.isArray(fields) ? fields.indexOf("m") : -1;
  if (i < 0 || typeof fields[i + 1] !== "string") return { id, error: "no field m" };
  let m: unknown;
  try {
    m = JSON.parse(fields[i + 1]);
  } catch {
    return { id, error: "field m is not JSON" };
  }
  const bad = checkMsg(kind, m);
  return bad ? { id, error: bad } : { id, msg: m as M };
}

/** The entries of an XREAD/XREADGROUP reply (RESP3 map or RESP2 array form). */
function streamEntries(reply: unknown): RawEntry[] {
  if (!reply) return [];
  if (Array.isArray(reply)) return reply.flatMap((s) => (Array.isArray(s) ? ((s[1] as RawEntry[]) ?? []) : []));
  return Object.values(reply as Record<string, RawEntry[]>).flat();
}

/** A dropped connection, or a server still loading its data after a restart: worth retrying. Other errors are the caller's. */
function connectionLost(e: unknown): boolean {
  const code = String((e as { code?: unknown })?.code ?? "");
  if (code === "ERR_REDIS_SERVER_ERROR") return /^LOADING/.test((e as Error).message);
  return /CONNECTION|CLOSED|TIMEOUT|ECONN|SOCKET/i.test(code) || /connection|ECONNREFUSED/i.test(String((e as Error)?.message));
}

/** An XINFO reply as a record (RESP3 map, or RESP2 flat key-value array). */
function record(reply: unknown): Record<string, unknown> {
  const r = reply as unknown[];
  return Array.isArray(r) ? Object.fromEntries(Array.from({ length: r.length / 2 }, (_, i) => [r[2 * i], r[2 * i + 1]])) : (reply as Record<string, unknown>);
}

const isNoGroup = (e: unknown) => /NOGROUP/.test(String((e as Error)?.message));

export class Broker {
  /** Reconnections so far (a caller compares it before and after a call to learn the broker restarted). */
  epoch = 0;
  private reconnecting: Promise<void> | null = null;
  private closed = false;

  private constructor(
    private readonly client: RedisClient,
    readonly url: string,
    readonly prefix: string,
    private readonly log: (s: string) => void,
  ) {}

  static async connect(url: string, o: { prefix?: string; log?: (s: string) => void } = {}): Promise<Broker> {
    if (!/^rediss?:\/\//.test(url)) throw new Error(`--broker: expected a redis:// URL, got "${url}"`);
    // Reconnection is ours (back-off without limit, logged, counted); Bun's gives up after maxRetries.
    const client = new RedisClient(url, { autoReconnect: false, enableOfflineQueue: false });
    try {
      await client.connect();
    } catch (e) {
      client.close();
      throw new Error(`--broker ${url}: cannot connect (${(e as Error).message}); is redis-server running there?`);
    }
    const b = new Broker(client, url, o.prefix ?? "siri", o.log ?? ((s) => console.error(s)));
    await b.ensureGroup();
    return b;
  }

  key(name: string): string {
    return `${this.prefix}:${name}`;
  }

  /** The consumer group of the requests stream (made by whoever comes first; a broker that lost its data has none). */
  private async ensureGroup(): Promise<void> {
    try {
      await this.client.send("XGROUP", ["CREATE", this.key("requests"), GROUP, "0", "MKSTREAM"]);
    } catch (e) {
      if (!String(e).includes("BUSYGROUP")) throw e;
    }
  }

  /** One command; a lost connection is re-established (with back-off, logged) and the command sent again. */
  private async call(cmd: string, args: string[]): Promise<unknown> {
    for (;;) {
      try {
        return await this.client.send(cmd, args);
      } catch (e) {
        if (this.closed || !connectionLost(e)) throw e;
        await this.reconnect(e as Error);
      }
    }
  }

  /** Reconnect, doubling the wait from 100 ms up to MAX_BACKOFF_MS; concurrent callers share one attempt. */
  private reconnect(why: Error): Promise<void> {
    this.reconnecting ??= (async () => {
      const t0 = performance.now();
      const secs = () => ((performance.now() - t0) / 1000).toFixed(1);
      this.log(`broker ${this.url}: connection lost (${why.message}); reconnecting with back-off`);
      let wait = 100;
      let lastSaid = t0;
      for (;;) {
        await Bun.sleep(wait);
        if (this.closed) throw why;
        try {
          if (!this.client.connected) await this.client.connect();
          await this.ensureGroup();
          break;
        } catch (e) {
          if (!connectionLost(e)) throw e;
          if (performance.now() - lastSaid > 30_000) {
            lastSaid = performance.now();
            this.log(`broker ${this.url}: still unreachable after ${secs()} s (${(e as Error).message}); retrying every ${wait / 1000} s`);
          }
        }
        wait = Math.min(2 * wait, MAX_BACKOFF_MS);
      }
      this.epoch++;
      this.log(`broker ${this.url}: reconnected after ${secs()} s`);
    })().finally(() => {
      this.reconnecting = null;
    });
    return this.reconnecting;
  }

  /** Add a message; its stream entry id. */
  private async add(stream: string, m: Msg, maxLen?: number): Promise<string> {
    const trim = maxLen === undefined ? [] : ["MAXLEN", String(maxLen)];
    return String(await this.call("XADD", [stream, ...trim, "*", "m", JSON.stringify(m)]));
  }

  /** Publish requests; their stream entry ids, in order. */
  publishRequests(reqs: RequestMsg[]): Promise<string[]> {
    return Promise.all(reqs.map((r) => this.add(this.key("requests"), r)));
  }

  /** Which of these request entries the broker still holds (not yet served, or kept across a restart). */
  async held(entryIds: string[]): Promise<boolean[]> {
    const r = await Promise.all(entryIds.map((id) => this.call("XRANGE", [this.key("requests"), id, id])));
    return r.map((x) => Array.isArray(x) && x.length > 0);
  }

  /** Drop request entries (an abandoned round's). */
  async discard(entryIds: string[]): Promise<void> {
    if (entryIds.length) await this.call("XDEL", [this.key("requests"), ...entryIds]);
  }

  async announce(w: WeightsMsg): Promise<void> {
    await this.add(this.key("weights"), w, WEIGHTS_KEPT);
  }

  /** The newest weight announcement, or null (none yet, or a malformed one: `error`). */
  async latestWeights(): Promise<Entry<WeightsMsg> | null> {
    const r = (await this.call("XREVRANGE", [this.key("weights"), "+", "-", "COUNT", "1"])) as RawEntry[] | null;
    return r?.length ? parseEntry<WeightsMsg>("weights", r[0]) : null;
  }

  /**
   * Requests for `worker`: first those another worker left pending for over
   * `claimIdleMs` (XAUTOCLAIM), else new ones, waiting up to `blockMs`.
   */
  async claim(worker: string, count: number, blockMs: number, claimIdleMs: number): Promise<Entry<RequestMsg>[]> {
    const stream = this.key("requests");
    try {
      const auto = (await this.call("XAUTOCLAIM", [stream, GROUP, worker, String(claimIdleMs), "0-0", "COUNT", String(count)])) as [string, RawEntry[], string[]];
      // Entries deleted meanwhile come back as null; skip them.
      const stolen = (auto?.[1] ?? []).filter((e) => Array.isArray(e) && Array.isArray(e[1]));
      if (stolen.length) return stolen.map((e) => parseEntry<RequestMsg>("request", e));
      const fresh = await this.call("XREADGROUP", ["GROUP", GROUP, worker, "COUNT", String(count), "BLOCK", String(blockMs), "STREAMS", stream, ">"]);
      return streamEntries(fresh).map((e) => parseEntry<RequestMsg>("request", e));
    } catch (e) {
      // The stream and its group are gone (a broker restarted without its data, or flushed): make them again.
      if (!isNoGroup(e)) throw e;
      await this.ensureGroup();
      return [];
    }
  }

  /** Served (or rejected) requests: acknowledged and deleted, so the stream holds only outstanding ones. */
  async ack(ids: string[]): Promise<void> {
    if (!ids.length) return;
    try {
      await this.call("XACK", [this.key("requests"), GROUP, ...ids]);
    } catch (e) {
      if (!isNoGroup(e)) throw e; // a broker that lost its data has nothing to acknowledge
    }
    await this.call("XDEL", [this.key("requests"), ...ids]);
  }

  async complete(c: CompletionMsg): Promise<void> {
    await this.add(this.key(`completions:${c.run}`), c);
  }

  /** Completions of `run` after stream id `after`, waiting up to `blockMs`; `last` is where to continue. */
  async completions(run: string, after: string, blockMs: number): Promise<{ entries: Entry<CompletionMsg>[]; last: string }> {
    const r = await this.call("XREAD", ["COUNT", "1000", "BLOCK", String(blockMs), "STREAMS", this.key(`completions:${run}`), after]);
    const raw = streamEntries(r);
    return { entries: raw.map((e) => parseEntry<CompletionMsg>("completion", e)), last: raw.length ? raw[raw.length - 1][0] : after };
  }

  /** Forget `run`'s completions up to and including `upTo` (read already); all of them with no `upTo`. */
  async dropCompletions(run: string, upTo?: string): Promise<void> {
    const key = this.key(`completions:${run}`);
    if (upTo === undefined) await this.call("DEL", [key]);
    else await this.call("XTRIM", [key, "MINID", nextId(upTo)]);
  }

  /** Workers in the group (names, pending counts, idle ms), as Redis sees them. */
  async workers(): Promise<{ name: string; pending: number; idle: number }[]> {
    let r: unknown[];
    try {
      r = (await this.call("XINFO", ["CONSUMERS", this.key("requests"), GROUP])) as unknown[];
    } catch (e) {
      if (!isNoGroup(e) && !/no such key/i.test(String(e))) throw e;
      return [];
    }
    return (r ?? []).map((c) => {
      const o = record(c);
      return { name: String(o.name), pending: Number(o.pending), idle: Number(o.idle) };
    });
  }

  /** Say `worker` is alive for the next `ttlMs` (its heartbeat; the server's clock times it out, so hosts' clocks need not agree). */
  async alive(worker: string, ttlMs = PRESENCE_TTL_MS): Promise<void> {
    await this.call("SET", [this.key(`alive:${worker}`), String(process.pid), "PX", String(ttlMs)]);
  }

  /** `worker` stops: it is gone at once, not after the TTL (once, no retry: the broker may be gone; then the TTL does it). */
  async gone(worker: string): Promise<void> {
    try {
      if (this.client.connected) await this.client.send("DEL", [this.key(`alive:${worker}`)]);
    } catch {
      // best effort
    }
  }

  /** Names of the workers whose heartbeat has not timed out. */
  async liveWorkers(): Promise<string[]> {
    const prefix = this.key("alive:");
    const names: string[] = [];
    let cursor = "0";
    do {
      const [next, keys] = (await this.call("SCAN", [cursor, "MATCH", `${prefix}*`, "COUNT", "1000"])) as [string, string[]];
      cursor = String(next);
      for (const k of keys ?? []) names.push(String(k).slice(prefix.length));
    } while (cursor !== "0");
    return names.sort();
  }

  /** Bytes Redis uses (INFO memory's used_memory): the figure trimming keeps bounded. */
  async usedMemory(): Promise<number> {
    const info = String(await this.call("INFO", ["memory"]));
    return Number(/used_memory:(\d+)/.exec(info)?.[1] ?? Number.NaN);
  }

  /** Entries in a stream (tests, tools). */
  async length(name: string): Promise<number> {
    return Number(await this.call("XLEN", [this.key(name)]));
  }

  /** Entries ever added to a stream, deleted ones included (XINFO STREAM's entries-added, Redis 7+); 0 for none. */
  async entriesAdded(name: string): Promise<number> {
    let r: unknown;
    try {
      r = await this.call("XINFO", ["STREAM", this.key(name)]);
    } catch (e) {
      if (/no such key/i.test(String(e))) return 0;
      throw e;
    }
    const o = record(r);
    if (o["entries-added"] === undefined) throw new Error(`XINFO STREAM ${this.key(name)}: no entries-added (Redis 7 or newer needed)`);
    return Number(o["entries-added"]);
  }

  /** For tests and tools: add a raw field value to a stream. */
  async addRaw(name: string, value: string): Promise<void> {
    await this.call("XADD", [this.key(name), "*", "m", value]);
  }

  /** At the end of a run: request entries it will never read (prefetched rounds), its completions stream (once, no retry: the broker may be gone), then the connection. */
  async closeRun(run: string, discard: string[] = []): Promise<void> {
    try {
      if (this.client.connected && discard.length) await this.client.send("XDEL", [this.key("requests"), ...discard]);
      if (this.client.connected) await this.client.send("DEL", [this.key(`completions:${run}`)]);
    } catch {
      // best effort
    }
    this.close();
  }

  close(): void {
    this.closed = true;
    this.client.close();
  }
}

/** The stream id right after `id` ("ms-seq" -> "ms-(seq+1)"). */
function nextId(id: string): string {
  const [ms, seq] = id.split("-");
  return `${ms}-${BigInt(seq ?? "0") + 1n}`;
}
