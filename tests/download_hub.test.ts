// Downloads as the Hub's own client does them, against a local stand-in Hub
// (Bun.serve on a port the OS picks; no network): HF_TOKEN as a Bearer
// header, a revision in the URL and in download.json / the bench run record,
// and files reused from a Hugging Face cache laid out as the Hub client lays it out.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runBench, type CompletionSource } from "../src/bench/run.ts";
import { readRunConfig } from "../src/bench/report.ts";
import { DOWNLOAD_RECORD, downloadPreset, hfCachedFile, hubUrl, loadDataset, readDownloadRecord } from "../src/data/download.ts";
import { presetOrThrow } from "../src/data/presets.ts";

const tmp = mkdtempSync(join(tmpdir(), "siri-hub-"));
const EMPTY_CACHE = join(tmp, "empty-hf-cache");
const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const OTHER = "89abcdef0123456789abcdef0123456789abcdef";
const jsonl = (tag: string, n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ question: `${tag} problem ${i + 1}`, answer: `${i}` })).join("\n") + "\n";

// The stand-in: AIME 2025's two files at main (commit COMMIT) and at tag "v1"
// (commit OTHER); the "gated" copy under /datasets/opencompass/AIME2025 needs
// the token "hf_test" when `gated` is on.
const seen: { path: string; auth: string | null }[] = [];
let gated = false;
const server = Bun.serve({
  port: 0,
  fetch(req) {
    const path = new URL(req.url).pathname;
    const auth = req.headers.get("authorization");
    seen.push({ path, auth });
    if (gated && auth !== "Bearer hf_test") return new Response("unauthorized", { status: 401, statusText: "Unauthorized" });
    const m = path.match(/^\/datasets\/opencompass\/AIME2025\/resolve\/([^/]+)\/(aime2025-I{1,2}\.jsonl)$/);
    if (!m) return new Response("not found", { status: 404, statusText: "Not Found" });
    const rev = decodeURIComponent(m[1]!);
    if (rev !== "main" && rev !== "v1") return new Response("no such revision", { status: 404, statusText: "Not Found" });
    return new Response(jsonl(`${rev} ${m[2]}`, 15), { headers: { "x-repo-commit": rev === "main" ? COMMIT : OTHER } });
  },
});
afterAll(() => server.stop(true));
const endpoint = `http://127.0.0.1:${server.port}`;

describe("downloads like the Hub client", () => {
  test("HF_TOKEN goes as a Bearer header; without it a gated repo says to set it", async () => {
    gated = true;
    try {
      const before = seen.length;
      const err = await downloadPreset("aime25", join(tmp, "gated-no-token"), { endpoint, hfCache: EMPTY_CACHE, token: "" }).catch((e: Error) => e);
      const had = process.env.HF_TOKEN;
      delete process.env.HF_TOKEN;
      delete process.env.HUGGING_FACE_HUB_TOKEN;
      const err2 = await downloadPreset("aime25", join(tmp, "gated-no-token-2"), { endpoint, hfCache: EMPTY_CACHE }).catch((e: Error) => e);
      process.env.HF_TOKEN = "hf_test";
      const paths = await downloadPreset("aime25", join(tmp, "gated"), { endpoint, hfCache: EMPTY_CACHE });
      if (had === undefined) delete process.env.HF_TOKEN;
      else process.env.HF_TOKEN = had;
      for (const e of [err, err2]) {
        expect(e).toBeInstanceOf(Error);
        expect((e as Error).message).toContain("answered HTTP 401");
        expect((e as Error).message).toContain("set HF_TOKEN");
      }
      expect(paths.length).toBe(2);
      const withToken = seen.slice(before).filter((s) => s.auth === "Bearer hf_test");
      expect(withToken.map((s) => s.path)).toEqual([
        "/datasets/opencompass/AIME2025/resolve/main/aime2025-I.jsonl",
        "/datasets/opencompass/AIME2025/resolve/main/aime2025-II.jsonl",
      ]);
      expect(seen.slice(before).filter((s) => s.auth !== null && s.auth !== "Bearer hf_test")).toEqual([]);
    } finally {
      gated = false;
    }
  });

  test("a revision is fetched from /resolve/<rev>/, pinned in download.json, and a new revision fetches again", async () => {
    const dir = join(tmp, "rev");
    expect(hubUrl("a/b", "x/y z.parquet", endpoint, "refs/pr/1")).toBe(`${endpoint}/datasets/a/b/resolve/refs%2Fpr%2F1/x/y%20z.parquet`);
    await downloadPreset("aime25", dir, { endpoint, hfCache: EMPTY_CACHE, revision: "v1" });
    const rec = readDownloadRecord(presetOrThrow("aime25"), dir)!;
    expect([rec.repo, rec.revision, rec.commit, rec.source]).toEqual(["opencompass/AIME2025", "v1", OTHER, "hub"]);
    let ds = await loadDataset("aime25", { dir });
    expect(ds.problems[0]!.problem).toBe("v1 aime2025-I.jsonl problem 1");
    expect(ds.revision).toEqual({ revision: "v1", commit: OTHER });
    // Same revision again: nothing fetched. Another revision: fetched again, record updated.
    const before = seen.length;
    await downloadPreset("aime25", dir, { endpoint, hfCache: EMPTY_CACHE, revision: "v1" });
    expect(seen.length).toBe(before);
    await downloadPreset("aime25", dir, { endpoint, hfCache: EMPTY_CACHE });
    expect(seen.length).toBe(before + 2);
    ds = await loadDataset("aime25", { dir });
    expect(ds.problems[0]!.problem).toBe("main aime2025-I.jsonl problem 1");
    expect(ds.revision).toEqual({ revision: "main", commit: COMMIT });
    const bad = await downloadPreset("aime25", join(tmp, "rev-bad"), { endpoint, hfCache: EMPTY_CACHE, revision: "nope" }).catch((e: Error) => e);
    expect((bad as Error).message).toContain('no revision "nope"');
  });

  test("files in a Hugging Face cache (refs/<rev> -> snapshots/<commit>/<file>) are copied, not fetched", async () => {
    const cache = join(tmp, "hf-home", "hub");
    const repoDir = join(cache, "datasets--opencompass--AIME2025");
    mkdirSync(join(repoDir, "refs"), { recursive: true });
    writeFileSync(join(repoDir, "refs", "main"), `${COMMIT}\n`);
    mkdirSync(join(repoDir, "snapshots", COMMIT), { recursive: true });
    for (const f of ["aime2025-I.jsonl", "aime2025-II.jsonl"]) writeFileSync(join(repoDir, "snapshots", COMMIT, f), jsonl(`cached ${f}`, 15));
    expect(hfCachedFile(cache, "opencompass/AIME2025", "main", "aime2025-I.jsonl")).toEqual({ path: join(repoDir, "snapshots", COMMIT, "aime2025-I.jsonl"), commit: COMMIT });
    expect(hfCachedFile(cache, "opencompass/AIME2025", COMMIT, "aime2025-II.jsonl")?.commit).toBe(COMMIT);
    expect(hfCachedFile(cache, "opencompass/AIME2025", "v1", "aime2025-I.jsonl")).toBeNull();

    const dir = join(tmp, "from-cache");
    const before = seen.length;
    const logs: string[] = [];
    // Found through HF_HOME, as the Hub client finds it.
    const old = [process.env.HF_HUB_CACHE, process.env.HF_HOME];
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = join(tmp, "hf-home");
    try {
      await downloadPreset("aime25", dir, { endpoint, log: (l) => logs.push(l) });
    } finally {
      if (old[0] === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = old[0];
      if (old[1] === undefined) delete process.env.HF_HOME;
      else process.env.HF_HOME = old[1];
    }
    expect(seen.length).toBe(before); // nothing fetched
    expect(logs.filter((l) => l.includes("from the Hugging Face cache")).length).toBe(2);
    const ds = await loadDataset("aime25", { dir });
    expect(ds.problems[0]!.problem).toBe("cached aime2025-I.jsonl problem 1");
    const rec = JSON.parse(readFileSync(join(dir, "aime25", DOWNLOAD_RECORD), "utf8"));
    expect([rec.revision, rec.commit, rec.source]).toEqual(["main", COMMIT, "hf-cache"]);

    // A bench run on that preset pins the revision and commit in its run record.
    const answer: CompletionSource = async function* (requests) {
      for (const r of requests) yield { id: r.id, text: "\\boxed{0}", promptTokens: 5, responseTokens: 3, stopReason: "stop", maxTokens: r.maxTokens };
    };
    const out = join(tmp, "bench-run");
    await runBench({ datasets: ["aime25"], datasetDir: dir, limit: 2, n: 1, maxTokens: 8, temperature: 0, topP: 1, topK: 0, seed: 0, afterThink: false, out, model: "scripted" }, answer, { progress: false });
    const pinned = (readRunConfig(out)!.datasets as Record<string, unknown>[])[0]!;
    expect([pinned.name, pinned.source, pinned.revision, pinned.commit]).toEqual(["aime25", "aime25", "main", COMMIT]);
  });
});
