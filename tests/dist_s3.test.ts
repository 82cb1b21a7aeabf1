// Rollout weights in an S3-compatible bucket (src/dist/weights.ts, src/dist/s3.ts) against a real S3 server
// (s3rver, tests/s3.ts): a version written through S3 and downloaded by the worker's path is, byte for byte,
// the version a shared folder holds; an incomplete version is refused, naming what is missing; old versions
// are pruned as in a folder; missing or wrong credentials and an unreachable endpoint are named.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { S3Client } from "bun";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseS3Url } from "../src/dist/s3.ts";
import { checkWeightsRoot, localWeights, MARKER, versionDir, writeWeightsVersion, type VersionTensor } from "../src/dist/weights.ts";
import { openCheckpoint } from "../src/model/safetensors.ts";
import { startS3, type S3Server } from "./s3.ts";

const ROOT = mkdtempSync(join(tmpdir(), "siri-dist-s3-"));
const VARS = ["S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_ENDPOINT", "S3_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT", "AWS_REGION"];
const saved = Object.fromEntries(VARS.map((v) => [v, process.env[v]]));
let s3: S3Server;
let client: S3Client;
const CONFIG = join(ROOT, "config.json");

/** Set exactly these S3 variables in this process (Bun's client and src/dist/s3.ts read them). */
function setEnv(env: Record<string, string>): void {
  for (const v of VARS) delete process.env[v];
  Object.assign(process.env, env);
}

beforeAll(async () => {
  s3 = await startS3("weights");
  setEnv(s3.env);
  client = new S3Client({ bucket: s3.bucket, accessKeyId: "S3RVER", secretAccessKey: "S3RVER", endpoint: s3.endpoint });
  writeFileSync(CONFIG, JSON.stringify({ model_type: "qwen2", hidden_size: 8 }));
});
afterAll(async () => {
  setEnv(Object.fromEntries(Object.entries(saved).filter((e): e is [string, string] => e[1] !== undefined)));
  await s3?.stop();
  rmSync(ROOT, { recursive: true, force: true });
});

/** Two tensors of f16 bits drawn from `seed` (every bit pattern but NaNs' is as good as any for a copy). */
function tensors(seed: number): VersionTensor[] {
  let x = seed * 2654435761;
  const next = () => {
    x = (x * 1103515245 + 12345) >>> 0;
    return (x >>> 8) & 0x7bff; // exponent below all-ones: no NaN or infinity
  };
  const t = (name: string, shape: number[]) => ({ name, shape, data: Uint16Array.from({ length: shape.reduce((a, b) => a * b) }, next) });
  return [t("model.embed_tokens.weight", [16, 8]), t("model.norm.weight", [8])];
}

const keys = async (prefix: string) => ((await client.list({ prefix })).contents ?? []).map((o) => o.key).sort();
const folders = async (prefix: string) => ((await client.list({ prefix: `${prefix}/`, delimiter: "/" })).commonPrefixes ?? []).map((p) => p.prefix).sort();

describe("rollout weights in an S3 bucket", () => {
  test("a version written through S3 and downloaded by a worker is the shared folder's version, byte for byte", async () => {
    const ts = tensors(1);
    const url = await writeWeightsVersion("s3://weights/runs/a", 3, ts, "F16", CONFIG);
    expect(url).toBe("s3://weights/runs/a/v000003");
    expect(url).toBe(versionDir("s3://weights/runs/a/", 3));
    expect(await keys("runs/a/")).toEqual(["runs/a/v000003/complete.json", "runs/a/v000003/config.json", "runs/a/v000003/model.safetensors"]);
    const folder = await writeWeightsVersion(join(ROOT, "shared"), 3, ts, "F16", CONFIG);
    const cache = join(ROOT, "cache-a");
    const got = await localWeights(url, cache);
    expect(got.startsWith(join(cache, "v000003-"))).toBe(true);
    for (const f of ["model.safetensors", "config.json"]) expect(readFileSync(join(got, f)).equals(readFileSync(join(folder, f)))).toBe(true);
    // And the tensors, element for element (exact: a copy), as the worker's loader reads them.
    const r = openCheckpoint(got);
    try {
      expect(r.names().sort()).toEqual(ts.map((t) => t.name).sort());
      for (const t of ts) {
        expect(r.entry(t.name).shape).toEqual(t.shape);
        expect(Buffer.from(r.readF16Bits(t.name).buffer).equals(Buffer.from(t.data.buffer))).toBe(true);
      }
    } finally {
      r.close();
    }
    // Asked again: the cached copy, not a second download (nothing temporary left beside it).
    expect(await localWeights(url, cache)).toBe(got);
    expect(readdirSync(cache)).toEqual([got.slice(cache.length + 1)]);
    // A folder is used as announced.
    expect(await localWeights(folder, cache)).toBe(folder);
  });

  test("old versions are pruned as in a folder: the newest two kept, any numbered past a rewritten one deleted; a worker keeps only its newest download", async () => {
    const root = "s3://weights/runs/p";
    const cache = join(ROOT, "cache-p");
    for (let v = 0; v <= 3; v++) {
      await writeWeightsVersion(root, v, tensors(10 + v), "F16", CONFIG);
      await localWeights(versionDir(root, v), cache);
    }
    expect(await folders("runs/p")).toEqual(["runs/p/v000002/", "runs/p/v000003/"]);
    expect(readdirSync(cache).map((n) => n.slice(0, 7))).toEqual(["v000003"]);
    // A resumed run counting from 0 again: its version 1 replaces what it finds, versions past it go.
    await writeWeightsVersion(root, 1, tensors(20), "F16", CONFIG);
    expect(await folders("runs/p")).toEqual(["runs/p/v000001/"]);
    expect(await keys("runs/p/")).toEqual(["runs/p/v000001/complete.json", "runs/p/v000001/config.json", "runs/p/v000001/model.safetensors"]);
    // Rewritten in place: a new id, so a worker holding the old run's version 1 downloads the new one.
    const got = await localWeights(versionDir(root, 1), cache);
    const r = openCheckpoint(got);
    try {
      expect(Buffer.from(r.readF16Bits("model.norm.weight").buffer).equals(Buffer.from(tensors(20)[1].data.buffer))).toBe(true);
    } finally {
      r.close();
    }
  });

  test("an incomplete version is not loaded: no marker, a file missing, a size that disagrees; each error names the object", async () => {
    const url = await writeWeightsVersion("s3://weights/runs/i", 0, tensors(2), "F16", CONFIG);
    const cache = join(ROOT, "cache-i");
    const marker = await client.file(`runs/i/v000000/${MARKER}`).text();
    // Still uploading (or stopped part-way): the weights are there, the marker is not.
    await client.delete(`runs/i/v000000/${MARKER}`);
    await expect(localWeights(url, cache)).rejects.toThrow(`s3://weights/runs/i/v000000: incomplete version: no ${MARKER} (the learner uploads it after the weights`);
    // The marker, but not the weights: the download fails naming the object.
    await client.write(`runs/i/v000000/${MARKER}`, marker);
    const st = await client.file("runs/i/v000000/model.safetensors").arrayBuffer();
    await client.delete("runs/i/v000000/model.safetensors");
    await expect(localWeights(url, cache)).rejects.toThrow(/^downloading s3:\/\/weights\/runs\/i\/v000000\/model\.safetensors: NoSuchKey: .*\(no such object\)/);
    // Weights rewritten under a marker that describes other ones.
    await client.write("runs/i/v000000/model.safetensors", new Uint8Array(st).subarray(0, st.byteLength - 2));
    await expect(localWeights(url, cache)).rejects.toThrow(`s3://weights/runs/i/v000000/model.safetensors: ${st.byteLength - 2} bytes, ${MARKER} says ${st.byteLength}`);
    await client.write(`runs/i/v000000/${MARKER}`, '{"version":0,"id":"x"}');
    await expect(localWeights(url, cache)).rejects.toThrow(`s3://weights/runs/i/v000000/${MARKER}: files: expected {name: size}`);
    // Nothing half-downloaded is left in the cache.
    expect(existsSync(cache) ? readdirSync(cache) : []).toEqual([]);
  });

  test("credentials missing or wrong, an endpoint that does not answer: each error names the setting", async () => {
    try {
      setEnv({ S3_ENDPOINT: s3.endpoint });
      expect(() => checkWeightsRoot("s3://weights/runs/c")).toThrow("s3://weights/runs/c: no S3 credentials: set S3_ACCESS_KEY_ID (or AWS_ACCESS_KEY_ID) and S3_SECRET_ACCESS_KEY (or AWS_SECRET_ACCESS_KEY)");
      await expect(localWeights("s3://weights/runs/c/v000000", join(ROOT, "cache-c"))).rejects.toThrow("no S3 credentials");
      expect(() => checkWeightsRoot(join(ROOT, "a-folder"))).not.toThrow(); // a folder needs none
      // The AWS names do as well; a wrong key is refused by the server, and the error says which variables to check.
      setEnv({ AWS_ACCESS_KEY_ID: "nobody", AWS_SECRET_ACCESS_KEY: "wrong", AWS_ENDPOINT: s3.endpoint });
      await expect(writeWeightsVersion("s3://weights/runs/c", 0, tensors(3), "F16", CONFIG)).rejects.toThrow(/^deleting s3:\/\/weights\/runs\/c\/v000000\/complete\.json: InvalidAccessKeyId: .*\(check S3_ACCESS_KEY_ID \/ S3_SECRET_ACCESS_KEY \(or AWS_\*\)/);
      // Nothing listens there (a port just closed by the kernel's choice).
      const gone = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const port = gone.port;
      gone.stop(true);
      setEnv({ ...s3.env, S3_ENDPOINT: `http://127.0.0.1:${port}` });
      await expect(localWeights("s3://weights/runs/c/v000000", join(ROOT, "cache-c"))).rejects.toThrow(`(cannot reach the store: check S3_ENDPOINT (or AWS_ENDPOINT; unset: AWS itself), now http://127.0.0.1:${port})`);
    } finally {
      setEnv(s3.env);
    }
  });

  test("s3:// URLs: bucket and prefix, trailing slashes dropped; a URL with no bucket is refused", () => {
    expect(parseS3Url("s3://b/x/y/")).toEqual({ url: "s3://b/x/y", bucket: "b", prefix: "x/y" });
    expect(parseS3Url("s3://b")).toEqual({ url: "s3://b", bucket: "b", prefix: "" });
    expect(versionDir("s3://b", 7)).toBe("s3://b/v000007");
    expect(() => parseS3Url("s3:///x")).toThrow("s3:///x: expected s3://BUCKET/PREFIX");
  });
});
