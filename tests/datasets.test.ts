// Dataset loaders (JSON, JSONL, Parquet) on this project's fixtures, presets, the Hub download
// (against a local stand-in server and an unreachable address; never the network), the prompt.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fixtureFiles, FIXTURE_ROWS } from "../datasets/make_fixtures.ts";
import { downloadPreset, hubUrl, isDownloaded, loadDataset } from "../src/data/download.ts";
import { formatOf, loadProblems, parseFieldMap, type Problem } from "../src/data/load.ts";
import { writeParquet } from "../src/data/parquet_write.ts";
import { findPreset, PRESETS, presetOrThrow } from "../src/data/presets.ts";
import { DEEPSCALER_INSTRUCTION, renderPrompt, userMessage } from "../src/data/prompt.ts";

const ROOT = join(import.meta.dir, "..");
const FIX = join(ROOT, "datasets", "fixtures");
const BUN = process.execPath;
const tmp = mkdtempSync(join(tmpdir(), "siri-datasets-"));
// Never the machine's own Hugging Face cache: downloads here come from the stand-in server only.
process.env.HF_HUB_CACHE = join(tmp, "no-hf-cache");
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function write(name: string, data: string | Uint8Array): string {
  const p = join(tmp, name);
  writeFileSync(p, data);
  return p;
}

/** What every fixture must load to: answers as strings, no solution where null, subject/level kept. */
const EXPECTED: Problem[] = FIXTURE_ROWS.map((r) => {
  const p: Problem = { id: r.id, problem: r.problem, answer: r.answer, meta: { subject: r.subject, level: r.level } };
  if (r.solution !== null) p.solution = r.solution;
  return p;
});

describe("loaders on fixtures", () => {
  for (const ext of ["json", "jsonl", "parquet"]) {
    test(`tiny.${ext} loads every field of every problem`, async () => {
      const got = await loadProblems(join(FIX, `tiny.${ext}`), { fields: { keep: ["subject", "level"] } });
      expect(got).toEqual(EXPECTED);
    });
  }

  test("committed fixtures are exactly what datasets/make_fixtures.ts writes", () => {
    for (const [name, data] of Object.entries(fixtureFiles())) {
      const want = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
      expect(Buffer.compare(readFileSync(join(FIX, name)), want)).toBe(0);
    }
  });

  test("limit keeps the first problems", async () => {
    const got = await loadProblems(join(FIX, "tiny.jsonl"), { limit: 2 });
    expect(got.map((p) => p.id)).toEqual(["tiny/1", "tiny/2"]);
  });

  test("the format comes from the extension; unknown extensions are an error", () => {
    expect(formatOf("a/b.JSON")).toBe("json");
    expect(formatOf("x.ndjson")).toBe("jsonl");
    expect(formatOf("x.parquet")).toBe("parquet");
    expect(() => formatOf("data.csv")).toThrow(/data\.csv: unknown dataset format "\.csv"/);
  });
});

describe("field mapping", () => {
  test("explicit map, dotted paths, default ids from the file stem", async () => {
    const p = write(
      "mapped.jsonl",
      [
        { question: "Q one", reward_model: { ground_truth: "7" }, src: "a" },
        { question: "Q two", reward_model: { ground_truth: 12 }, src: "b" },
      ]
        .map((o) => JSON.stringify(o))
        .join("\n") + "\n\n",
    );
    const got = await loadProblems(p, { fields: { problem: "question", answer: "reward_model.ground_truth", keep: ["src"] } });
    expect(got).toEqual([
      { id: "mapped-0", problem: "Q one", answer: "7", meta: { src: "a" } },
      { id: "mapped-1", problem: "Q two", answer: "12", meta: { src: "b" } },
    ]);
  });

  test("fallback names: question/Answer/unique_id", async () => {
    const p = write("fallback.json", JSON.stringify({ data: [{ question: "Q", Answer: " 5 ", unique_id: "u/1" }] }));
    expect(await loadProblems(p)).toEqual([{ id: "u/1", problem: "Q", answer: "5", meta: {} }]);
  });

  test("parseFieldMap reads the CLI form and rejects unknown keys", () => {
    expect(parseFieldMap("problem=question, answer=gt,id=uid,keep=subject+level")).toEqual({
      problem: "question",
      answer: "gt",
      id: "uid",
      keep: ["subject", "level"],
    });
    expect(() => parseFieldMap("problme=question")).toThrow(/unknown key "problme"/);
    expect(() => parseFieldMap("problem")).toThrow(/expected NAME=FIELD/);
  });
});

describe("loader errors name the file, line or row, and field", () => {
  test("missing field in JSONL names the line and the fields present", async () => {
    const p = write("missing.jsonl", '{"problem":"a","answer":"1"}\n{"problem":"b","solution":"x"}\n');
    await expect(loadProblems(p)).rejects.toThrow(/missing\.jsonl line 2: missing field "answer".*fields present: problem, solution/);
  });

  test("invalid JSON line is named", async () => {
    const p = write("bad.jsonl", '{"problem":"a","answer":"1"}\n{"problem": oops}\n');
    await expect(loadProblems(p)).rejects.toThrow(/bad\.jsonl line 2: invalid JSON/);
  });

  test("JSON that is not an array of objects", async () => {
    await expect(loadProblems(write("scalar.json", "42"))).rejects.toThrow(/scalar\.json: expected a JSON array/);
    await expect(loadProblems(write("nonobj.json", '[{"problem":"a","answer":"1"}, 3]'))).rejects.toThrow(/nonobj\.json item \[1\]: expected an object/);
  });

  test("explicitly mapped field absent", async () => {
    await expect(loadProblems(join(FIX, "tiny.parquet"), { fields: { answer: "final" } })).rejects.toThrow(
      /tiny\.parquet row 1: missing field "answer" \(looked for "final"\)/,
    );
  });

  test("empty answer, non-scalar answer, duplicate ids, kept field absent", async () => {
    await expect(loadProblems(write("empty.json", '[{"problem":"a","answer":"  "}]'))).rejects.toThrow(/empty\.json item \[0\]: field "answer".*is empty/);
    await expect(loadProblems(write("obj.json", '[{"problem":"a","answer":{"x":1}}]'))).rejects.toThrow(/obj\.json item \[0\]: field "answer".*must be a string or number, got object/);
    await expect(loadProblems(write("dup.jsonl", '{"id":"a","problem":"p","answer":"1"}\n{"id":"a","problem":"q","answer":"2"}\n'))).rejects.toThrow(
      /dup\.jsonl line 2: duplicate id "a" \(first at .*dup\.jsonl line 1\)/,
    );
    await expect(loadProblems(join(FIX, "tiny.json"), { fields: { keep: ["year"] } })).rejects.toThrow(/tiny\.json item \[0\]: missing kept field "year"/);
  });

  test("null in a Parquet answer column names the row", async () => {
    const p = write(
      "nulls.parquet",
      writeParquet([
        { name: "problem", type: "string", values: ["a", "b", "c"] },
        { name: "answer", type: "string", optional: true, values: ["1", "2", null] },
      ]),
    );
    await expect(loadProblems(p)).rejects.toThrow(/nulls\.parquet row 3: field "answer" \(from "answer"\) is null; expected a string or number/);
  });

  test("a Git LFS pointer saved as .parquet is recognised", async () => {
    const p = write("pointer.parquet", "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n");
    await expect(loadProblems(p)).rejects.toThrow(/pointer\.parquet: not a Parquet file .*Git LFS pointer/);
  });

  test("missing file and empty file", async () => {
    await expect(loadProblems(join(tmp, "nope.jsonl"))).rejects.toThrow(/nope\.jsonl: cannot read dataset file/);
    await expect(loadProblems(write("blank.jsonl", "\n\n"))).rejects.toThrow(/blank\.jsonl: no problems in file/);
  });
});

describe("Parquet values", () => {
  test("int64 beyond 2^53, integral and fractional doubles, nulls in optional columns", async () => {
    const p = write(
      "values.parquet",
      writeParquet([
        { name: "id", type: "int64", values: [9007199254740993n, 1n, -5n] },
        { name: "problem", type: "string", values: ["p1", "p2 \u00e9\u20ac\u{1F600}", "p3"] },
        { name: "answer", type: "double", values: [142, 0.5, -3] },
        { name: "solution", type: "string", optional: true, values: [null, "s2", null] },
      ]),
    );
    expect(await loadProblems(p)).toEqual([
      { id: "9007199254740993", problem: "p1", answer: "142", meta: {} },
      { id: "1", problem: "p2 \u00e9\u20ac\u{1F600}", answer: "0.5", solution: "s2", meta: {} },
      { id: "-5", problem: "p3", answer: "-3", meta: {} },
    ]);
  });

  test("100 rows, an optional column with nulls, and 18 columns (Thrift long-list headers) round-trip", async () => {
    const n = 100;
    const extra = Array.from({ length: 15 }, (_, c) => `c${c}`);
    const p = write(
      "long.parquet",
      writeParquet([
        { name: "problem", type: "string", values: Array.from({ length: n }, (_, i) => `problem ${i}`) },
        { name: "answer", type: "int64", values: Array.from({ length: n }, (_, i) => i * i) },
        { name: "solution", type: "string", optional: true, values: Array.from({ length: n }, (_, i) => (i % 7 === 3 ? null : `sol ${i}`)) },
        ...extra.map((name, c) => ({ name, type: "double" as const, values: Array.from({ length: n }, (_, i) => i + c / 4) })),
      ]),
    );
    const got = await loadProblems(p, { fields: { keep: extra } });
    expect(got.length).toBe(n);
    got.forEach((q, i) => {
      const meta = Object.fromEntries(extra.map((name, c) => [name, i + c / 4]));
      expect(q).toEqual({ id: `long-${i}`, problem: `problem ${i}`, answer: `${i * i}`, meta, ...(i % 7 === 3 ? {} : { solution: `sol ${i}` }) });
    });
  });
});

describe("presets", () => {
  test("each preset names a Hub repo, files and a field map; names and aliases resolve", () => {
    const names = PRESETS.map((p) => p.name);
    expect(names).toEqual(["deepscaler", "aime24", "aime25", "math500", "amc"]);
    for (const p of PRESETS) {
      expect(p.repo).toMatch(/^[\w.-]+\/[\w.-]+$/);
      expect(p.files.length).toBeGreaterThan(0);
      for (const f of p.files) expect(formatOf(f)).toMatch(/json|jsonl|parquet/);
    }
    expect(findPreset("AIME2024")?.repo).toBe("HuggingFaceH4/aime_2024");
    expect(findPreset("math-500")?.fields).toEqual({ problem: "problem", answer: "answer", solution: "solution", id: "unique_id", keep: ["subject", "level"] });
    expect(findPreset("DeepScaleR-Preview")?.repo).toBe("agentica-org/DeepScaleR-Preview-Dataset");
    expect(() => presetOrThrow("gsm8k")).toThrow(/unknown dataset preset "gsm8k"; known: deepscaler, aime24/);
  });

  test("Hub URLs follow resolve/main and honour HF_ENDPOINT", () => {
    expect(hubUrl("HuggingFaceH4/MATH-500", "test.jsonl", "https://huggingface.co")).toBe(
      "https://huggingface.co/datasets/HuggingFaceH4/MATH-500/resolve/main/test.jsonl",
    );
    const old = process.env.HF_ENDPOINT;
    process.env.HF_ENDPOINT = "http://mirror.example/";
    try {
      expect(hubUrl("a/b", "data/x y.parquet")).toBe("http://mirror.example/datasets/a/b/resolve/main/data/x%20y.parquet");
    } finally {
      if (old === undefined) delete process.env.HF_ENDPOINT;
      else process.env.HF_ENDPOINT = old;
    }
  });
});

describe("download", () => {
  // A stand-in Hub on localhost: answers the aime25 preset's two files, 404 for anything else.
  const requests: string[] = [];
  const aime = (part: string) => Array.from({ length: 15 }, (_, i) => JSON.stringify({ question: `Made-up problem ${part}.${i + 1}`, answer: `${i * 7}` })).join("\n") + "\n";
  const server = Bun.serve({
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      requests.push(path);
      if (path === "/datasets/opencompass/AIME2025/resolve/main/aime2025-I.jsonl") return new Response(aime("I"));
      if (path === "/datasets/opencompass/AIME2025/resolve/main/aime2025-II.jsonl") return new Response(aime("II"));
      return new Response("not found", { status: 404, statusText: "Not Found" });
    },
  });
  afterAll(() => server.stop(true));
  const endpoint = `http://127.0.0.1:${server.port}`;

  test("a preset downloads from the endpoint, lands in <dir>/<name>/ and loads", async () => {
    const dir = join(tmp, "cache-ok");
    const logs: string[] = [];
    const paths = await downloadPreset("aime2025", dir, { endpoint, log: (l) => logs.push(l) });
    expect(paths).toEqual([join(dir, "aime25", "aime2025-I.jsonl"), join(dir, "aime25", "aime2025-II.jsonl")]);
    expect(isDownloaded(presetOrThrow("aime25"), dir)).toBe(true);
    const ds = await loadDataset("aime25", { dir });
    expect(ds.name).toBe("aime25");
    expect(ds.problems.length).toBe(30);
    expect(ds.problems[0]).toEqual({ id: "aime2025-I-0", problem: "Made-up problem I.1", answer: "0", meta: {} });
    expect(ds.problems[29]).toEqual({ id: "aime2025-II-14", problem: "Made-up problem II.15", answer: "98", meta: {} });
    // Present files are not fetched again.
    const before = requests.length;
    await downloadPreset("aime25", dir, { endpoint });
    expect(requests.length).toBe(before);
    expect(logs.at(-1)).toBe("aime25: 30 problems");
  });

  test("HTTP errors name the status and the file", async () => {
    await expect(downloadPreset("math500", join(tmp, "cache-404"), { endpoint })).rejects.toThrow(
      /dataset "math500": http:\/\/127\.0\.0\.1:\d+\/datasets\/HuggingFaceH4\/MATH-500\/resolve\/main\/test\.jsonl answered HTTP 404/,
    );
  });

  test("offline: an unreachable Hub fails fast with a clear message", async () => {
    const dir = join(tmp, "cache-offline");
    const t0 = performance.now();
    const err = await downloadPreset("amc", dir, { endpoint: "http://127.0.0.1:9", timeoutMs: 5000 }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toContain('dataset "amc": cannot reach the Hugging Face Hub at http://127.0.0.1:9/datasets/AI-MO/aimo-validation-amc/resolve/main/data/train-00000-of-00001.parquet');
    expect(msg).toContain("Are you offline?");
    expect(msg).toContain(join(dir, "amc", "data", "train-00000-of-00001.parquet"));
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(isDownloaded(presetOrThrow("amc"), dir)).toBe(false);
  });

  test("loading a preset that is not downloaded says how to download it", async () => {
    await expect(loadDataset("math500", { dir: join(tmp, "empty-cache") })).rejects.toThrow(
      /dataset "math500" is not in .*empty-cache .*run: bun run siri datasets download math500 --dir/,
    );
    await expect(loadDataset(join(tmp, "no-such.jsonl"))).rejects.toThrow(/not a preset \(deepscaler, aime24, aime25, math500, amc\) and no such file/);
  });
});

describe("siri datasets (CLI)", () => {
  const run = (args: string[], env: Record<string, string> = {}) => {
    const r = Bun.spawnSync([BUN, join(ROOT, "src", "cli.ts"), "datasets", ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
  };

  test("list --json shows every preset and its download state", () => {
    const r = run(["list", "--json", "--dir", join(tmp, "empty-cache")]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as { presets: { name: string; repo: string; downloaded: boolean }[] };
    expect(j.presets.map((p) => [p.name, p.repo, p.downloaded])).toEqual(PRESETS.map((p) => [p.name, p.repo, false]));
  });

  test("show --json on each fixture format", () => {
    for (const ext of ["json", "jsonl", "parquet"]) {
      const r = run(["show", join(FIX, `tiny.${ext}`), "--json", "--n", "2", "--fields", "keep=subject+level"]);
      expect(r.code).toBe(0);
      expect(JSON.parse(r.out)).toEqual({ name: "tiny", count: 6, problems: EXPECTED.slice(0, 2) });
    }
  });

  test("show --prompt prints the DeepScaleR user turn", () => {
    const r = run(["show", join(FIX, "tiny.jsonl"), "--n", "1", "--prompt"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`${FIXTURE_ROWS[0].problem} ${DEEPSCALER_INSTRUCTION}`);
  });

  test("download with HF_ENDPOINT unreachable exits 1 with one clear line", () => {
    const r = run(["download", "aime24", "--dir", join(tmp, "cli-offline")], { HF_ENDPOINT: "http://127.0.0.1:9" });
    expect(r.code).toBe(1);
    // Progress ("fetching ...") and the error both go to stderr; stdout stays empty.
    expect(r.out).toBe("");
    expect(r.err).toMatch(/^error: dataset "aime24": cannot reach the Hugging Face Hub at http:\/\/127\.0\.0\.1:9\/datasets\/HuggingFaceH4\/aime_2024\/resolve\/main\/data\/train-00000-of-00001\.parquet/m);
    expect(r.err).not.toContain("    at ");
  });

  test("show of a bad field map exits 1 naming the field", () => {
    const r = run(["show", join(FIX, "tiny.jsonl"), "--fields", "answer=final"]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('tiny.jsonl line 1: missing field "answer" (looked for "final")');
  });
});

describe("prompt", () => {
  // Written for these tests in the shape of DeepSeek-R1-Distill's template (BOS, User/Assistant markers, <think>).
  const R1_LIKE =
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}" +
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}" +
    "{% elif message['role'] == 'user' %}{{ '<\uff5cUser\uff5c>' + message['content'] }}" +
    "{% elif message['role'] == 'assistant' %}{{ '<\uff5cAssistant\uff5c>' + message['content'] + eos_token }}{% endif %}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<\uff5cAssistant\uff5c><think>\\n' }}{% endif %}";
  // ChatML, as Qwen2 instruct models use.
  const CHATML =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  const BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>";

  test("DeepScaleR's user turn: problem, a space, the instruction", () => {
    expect(DEEPSCALER_INSTRUCTION).toBe("Let's think step by step and output the final answer within \\boxed{}.");
    expect(userMessage("What is $1+1$?")).toBe("What is $1+1$? Let's think step by step and output the final answer within \\boxed{}.");
  });

  test("rendered through an R1-style template with BOS (string or {content})", () => {
    const want = `${BOS}<\uff5cUser\uff5c>What is $1+1$? Let's think step by step and output the final answer within \\boxed{}.<\uff5cAssistant\uff5c><think>\n`;
    expect(renderPrompt("What is $1+1$?", R1_LIKE, { bos_token: BOS, eos_token: "<eos>" })).toBe(want);
    expect(renderPrompt("What is $1+1$?", R1_LIKE, { bos_token: { content: BOS }, eos_token: null })).toBe(want);
  });

  test("ChatML with an optional system turn", () => {
    expect(renderPrompt("Find $x$.", CHATML, {}, { system: "Be brief." })).toBe(
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nFind $x$. Let's think step by step and output the final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n",
    );
  });

  test("bad templates are clear errors", () => {
    expect(() => renderPrompt("p", "", {})).toThrow(/chat template is empty/);
    expect(() => renderPrompt("p", "{% for m in messages %}", {})).toThrow(/renderPrompt: chat template/);
    expect(() => renderPrompt("p", "{{ raise_exception('no system role') }}", {})).toThrow(/no system role/);
  });
});
