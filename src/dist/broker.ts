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
 *
 * Every message is one JSON field "m", checked against its schema on
 * receipt; a malformed one is reported to the caller (which logs and drops
 * it), never thrown.
 */
import { RedisClient } from "bun";
import type { EngineOptions, SamplingOptions } from "../engine/generate.ts";
import type { DType } from "../engine/model.ts";

export const GROUP = "workers";

/** One generation request: one rollout of one prompt at one weight version. */
export interface RequestMsg {
  kind: "request";
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
}

export interface CompletionMsg {
  kind: "completion";
  run: string;
  version: number;
  id: string;
  tokens: number[];
  logprobs: number[];
  stopReason: "stop" | "length";
  worker: string;
}

/** Rollout weights of one version, in a folder on storage the workers share. */
export interface WeightsMsg {
  kind: "weights";
  run: string;
  version: number;
  /** Folder with config.json and model.safetensors (absolute path). */
  dir: string;
  dtype: DType;
  /** The learner's engine options: the same numerics (decode chunk, LM-head path) give the same completions. */
  engine: EngineOptions;
}

export type Msg = RequestMsg | CompletionMsg | WeightsMsg;

const isInt = (x: unknown): x is number => Number.isInteger(x);
const isNum = (x: unknown): x is number => typeof x === "number";
const ints = (x: unknown): x is number[] => Array.isArray(x) && x.every(isInt);
const isStr = (x: unknown): x is string => typeof x === "string" && x.length > 0;

/** The reason `m` is not a valid message of `kind`, or null. */
export function checkMsg(kind: Msg["kind"], m: unknown): string | null {
  if (typeof m !== "object" || m === null) return "not a JSON object";
  const o = m as Record<string, unknown>;
  if (o.kind !== kind) return `kind is ${JSON.stringify(o.kind)}, expected "${kind}"`;
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
  } else if (kind === "completion") {
    if (!isStr(o.id)) return "id: expected a non-empty string";
    if (!ints(o.tokens)) return "tokens: expected an array of token ids";
    if (!Array.isArray(o.logprobs) || !o.logprobs.every(isNum) || o.logprobs.length !== (o.tokens as number[]).length) return "logprobs: expected one number per token";
    if (o.stopReason !== "stop" && o.stopReason !== "length") return 'stopReason: expected "stop" or "length"';
    if (typeof o.worker !== "string") return "worker: expected a string";
  } else {
    if (!isStr(o.dir)) return "dir: expected a folder path";
    if (o.dtype !== "f16" && o.dtype !== "f32") return 'dtype: expected "f16" or "f32"';
    const e = o.engine as Record<string, unknown> | undefined;
    if (!e || !["maxBatch", "maxSeqLen", "cacheTokens", "blockSize", "prefillChunk"].every((k) => isInt(e[k]) && (e[k] as number) > 0)) return "engine: expected engine options";
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

export class Broker {
  private constructor(
    private readonly client: RedisClient,
    readonly url: string,
    readonly prefix: string,
  ) {}

  static async connect(url: string, prefix = "siri"): Promise<Broker> {
    if (!/^rediss?:\/\//.test(url)) throw new Error(`--broker: expected a redis:// URL, got "${url}"`);
    const client = new RedisClient(url, { autoReconnect: true, enableOfflineQueue: true });
    try {
      await client.connect();
    } catch (e) {
      client.close();
      throw new Error(`--broker ${url}: cannot connect (${(e as Error).message}); is redis-server running there?`);
    }
    const b = new Broker(client, url, prefix);
    try {
      await client.send("XGROUP", ["CREATE", b.key("requests"), GROUP, "0", "MKSTREAM"]);
    } catch (e) {
      if (!String(e).includes("BUSYGROUP")) throw e; // made already by another process
    }
    return b;
  }

  key(name: string): string {
    return `${this.prefix}:${name}`;
  }

  private add(stream: string, m: Msg): Promise<unknown> {
    return this.client.send("XADD", [stream, "*", "m", JSON.stringify(m)]);
  }

  async publishRequests(reqs: RequestMsg[]): Promise<void> {
    await Promise.all(reqs.map((r) => this.add(this.key("requests"), r)));
  }

  async announce(w: WeightsMsg): Promise<void> {
    await this.add(this.key("weights"), w);
  }

  /** The newest weight announcement, or null (none yet, or a malformed one: `error`). */
  async latestWeights(): Promise<Entry<WeightsMsg> | null> {
    const r = (await this.client.send("XREVRANGE", [this.key("weights"), "+", "-", "COUNT", "1"])) as RawEntry[] | null;
    return r?.length ? parseEntry<WeightsMsg>("weights", r[0]) : null;
  }

  /**
   * Requests for `worker`: first those another worker left pending for over
   * `claimIdleMs` (XAUTOCLAIM), else new ones, waiting up to `blockMs`.
   */
  async claim(worker: string, count: number, blockMs: number, claimIdleMs: number): Promise<Entry<RequestMsg>[]> {
    const stream = this.key("requests");
    const auto = (await this.client.send("XAUTOCLAIM", [stream, GROUP, worker, String(claimIdleMs), "0-0", "COUNT", String(count)])) as [string, RawEntry[], string[]];
    // Entries deleted meanwhile come back as null; skip them.
    const stolen = (auto?.[1] ?? []).filter((e) => Array.isArray(e) && Array.isArray(e[1]));
    if (stolen.length) return stolen.map((e) => parseEntry<RequestMsg>("request", e));
    const fresh = await this.client.send("XREADGROUP", ["GROUP", GROUP, worker, "COUNT", String(count), "BLOCK", String(blockMs), "STREAMS", stream, ">"]);
    return streamEntries(fresh).map((e) => parseEntry<RequestMsg>("request", e));
  }

  async ack(ids: string[]): Promise<void> {
    if (ids.length) await this.client.send("XACK", [this.key("requests"), GROUP, ...ids]);
  }

  async complete(c: CompletionMsg): Promise<void> {
    await this.add(this.key(`completions:${c.run}`), c);
  }

  /** Completions of `run` after stream id `after`, waiting up to `blockMs`; `last` is where to continue. */
  async completions(run: string, after: string, blockMs: number): Promise<{ entries: Entry<CompletionMsg>[]; last: string }> {
    const r = await this.client.send("XREAD", ["COUNT", "1000", "BLOCK", String(blockMs), "STREAMS", this.key(`completions:${run}`), after]);
    const raw = streamEntries(r);
    return { entries: raw.map((e) => parseEntry<CompletionMsg>("completion", e)), last: raw.length ? raw[raw.length - 1][0] : after };
  }

  /** Workers in the group (names, pending counts, idle ms), as Redis sees them. */
  async workers(): Promise<{ name: string; pending: number; idle: number }[]> {
    const r = (await this.client.send("XINFO", ["CONSUMERS", this.key("requests"), GROUP])) as unknown[];
    return (r ?? []).map((c) => {
      const o: Record<string, unknown> = Array.isArray(c) ? Object.fromEntries(Array.from({ length: c.length / 2 }, (_, i) => [c[2 * i], c[2 * i + 1]])) : (c as Record<string, unknown>);
      return { name: String(o.name), pending: Number(o.pending), idle: Number(o.idle) };
    });
  }

  /** For tests and tools: add a raw field value to a stream. */
  async addRaw(name: string, value: string): Promise<void> {
    await this.client.send("XADD", [this.key(name), "*", "m", value]);
  }

  close(): void {
    this.client.close();
  }
}
