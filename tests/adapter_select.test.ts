// `--adapter NAME|INDEX`: the choice among Dawn's adapters (pure, on made-up machines: eight identical GPUs,
// mixed ones), and on this machine's one adapter through every command that takes the flag, in subprocesses.
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ArgsDef, CommandDef } from "citty";
import { main } from "../src/cli.ts";
import { type ListedAdapter, parseAdapterChoice, planAdapter } from "../src/gpu/device.ts";
import { makeTinyModel } from "../src/model/tiny.ts";
import { hasGpu } from "./helpers.ts";

const listed = (...names: string[]): ListedAdapter[] => names.map((name, index) => ({ index, backend: "vulkan", name }));
const H100 = "NVIDIA H100 80GB HBM3";
const LLVM = "llvmpipe (LLVM 15.0.6, 256 bits)";
const EIGHT = listed(...Array(8).fill(H100), LLVM);

describe("--adapter: which adapter, and how it is opened", () => {
  test("digits are an index, anything else a part of the name; a negative index or nothing is an error naming the flag", () => {
    expect(parseAdapterChoice("0")).toEqual({ index: 0 });
    expect(parseAdapterChoice(" 7 ")).toEqual({ index: 7 });
    expect(parseAdapterChoice("H100")).toEqual({ name: "H100" });
    expect(parseAdapterChoice("gpu1")).toEqual({ name: "gpu1" });
    expect(() => parseAdapterChoice("-1")).toThrow(/^--adapter -1: an adapter index is 0 or more/);
    expect(() => parseAdapterChoice("  ")).toThrow(/^--adapter: expected an adapter name/);
  });

  test("eight identical GPUs: index 0 by Dawn's name flag, index k by Mesa's device-select layer (DRI_PRIME=k), the software one by name", () => {
    expect(planAdapter(EIGHT, { index: 0 }, "vulkan", "linux")).toEqual({ name: H100, index: 0, flag: `adapter=${H100}`, chosen: `index 0 of 9 ("${H100}")` });
    for (const k of [1, 3, 7]) {
      const p = planAdapter(EIGHT, { index: k }, "vulkan", "linux");
      expect([p.flag, p.env]).toEqual([`adapter=${H100}`, { DRI_PRIME: String(k), MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE: "1" }]);
      expect(p.chosen).toBe(`index ${k} of 9 ("${H100}"), by Mesa's Vulkan device-select layer (DRI_PRIME=${k})`);
    }
    expect(planAdapter(EIGHT, { index: 8 }, "vulkan", "linux")).toEqual({ name: LLVM, index: 8, flag: `adapter=${LLVM}`, chosen: `index 8 of 9 ("${LLVM}")` });
    expect(planAdapter(EIGHT, { name: "llvmpipe" }, "vulkan", "linux")).toMatchObject({ index: 8, flag: `adapter=${LLVM}` });
  });

  test("out of range, no match, ambiguous: an error naming --adapter and listing the adapters", () => {
    expect(() => planAdapter(EIGHT, { index: 9 }, "vulkan", "linux")).toThrow(/^--adapter 9: out of range, there are 9 adapters \(indices 0\.\.8\); the adapters on backend vulkan \(siri gpu --list-adapters\):\n {2}0 {2}vulkan {2}NVIDIA H100/);
    expect(() => planAdapter(listed(LLVM), { index: 1 }, "vulkan", "linux")).toThrow(/^--adapter 1: out of range, there is 1 adapter \(index 0\)/);
    expect(() => planAdapter(EIGHT, { name: "AMD" }, "vulkan", "linux")).toThrow(/^--adapter "AMD": no adapter has it in its name/);
    // A name that eight GPUs share picks none of them: each worker must say which.
    expect(() => planAdapter(EIGHT, { name: "h100" }, "vulkan", "linux")).toThrow(/^--adapter "h100" matches 8 identical adapters \(indices 0, 1, 2, 3, 4, 5, 6, 7\): give the index of one/);
    expect(() => planAdapter(listed("NVIDIA A100", "NVIDIA H100"), { name: "NVIDIA" }, "vulkan", "linux")).toThrow(/^--adapter "NVIDIA" is ambiguous: 2 adapters of different names have it \(0, 1\)/);
    expect(() => planAdapter([], { index: 0 }, "vulkan", "linux")).toThrow(/^--adapter: no adapter on backend vulkan/);
  });

  test("an adapter Dawn cannot reach by name and the device-select layer cannot pick: an error, not another GPU", () => {
    // Identical GPUs on Metal (no Mesa layer), or not leading the list (the layer counts GPUs from the first).
    expect(() => planAdapter(listed("Apple M2", "Apple M2"), { index: 1 }, "metal", "darwin")).toThrow(/^--adapter 1: adapter 1 \("Apple M2"\) cannot be told from adapter 0/);
    expect(() => planAdapter(listed("NVIDIA A100", H100, H100), { index: 2 }, "vulkan", "linux")).toThrow(/^--adapter 2: .*cannot be told from adapter 1/);
    // A name inside an earlier adapter's name: Dawn's flag would open the earlier one.
    const superset = listed("NVIDIA H100 PCIe", "NVIDIA H100");
    expect(() => planAdapter(superset, { index: 1 }, "vulkan", "linux")).toThrow(/^--adapter 1: adapter 1 \("NVIDIA H100"\) cannot be told from adapter 0/);
    expect(() => planAdapter(superset, { name: "H100" }, "vulkan", "linux")).toThrow(/is ambiguous/);
    expect(planAdapter(superset, { index: 0 }, "vulkan", "linux")).toMatchObject({ index: 0, flag: "adapter=NVIDIA H100 PCIe" });
    // The other order works both ways: the shorter name is not inside the longer one's predecessor.
    expect(planAdapter(listed("NVIDIA H100", "NVIDIA H100 PCIe"), { name: "pcie" }, "vulkan", "linux")).toMatchObject({ index: 1, flag: "adapter=NVIDIA H100 PCIe" });
  });
});

/** The commands (and subcommands) whose flags include --adapter. */
async function adapterCommands(cmd: CommandDef, path: string[] = []): Promise<string[]> {
  const out: string[] = [];
  const args = (typeof cmd.args === "function" ? await cmd.args() : await cmd.args) as ArgsDef | undefined;
  if (args && "adapter" in args) out.push(path.join(" "));
  const subs = (typeof cmd.subCommands === "function" ? await cmd.subCommands() : await cmd.subCommands) ?? {};
  for (const [name, sub] of Object.entries(subs)) {
    const def = (typeof sub === "function" ? await sub() : await sub) as CommandDef;
    out.push(...(await adapterCommands(def, [...path, name])));
  }
  return out;
}

const GPU = await hasGpu();
const ROOT = mkdtempSync(join(tmpdir(), "siri-adapter-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));

function siri(args: string[], env: Record<string, string> = {}) {
  const p = Bun.spawnSync([process.execPath, "src/cli.ts", ...args], { cwd: join(import.meta.dir, ".."), env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}

describe.skipIf(!GPU)("--adapter on this machine", () => {
  test("siri gpu --list-adapters shows the indices; index 0 and a part of the name open that adapter; index n is out of range", () => {
    const l = siri(["gpu", "--list-adapters", "--json"]);
    expect(l.code).toBe(0);
    const list = JSON.parse(l.out) as ListedAdapter[];
    expect(list.length).toBeGreaterThanOrEqual(1);
    expect(list.map((a) => a.index)).toEqual(list.map((_, i) => i));
    for (const a of list) expect(a.name.length).toBeGreaterThan(0);
    const text = siri(["gpu", "--list-adapters"]);
    expect(text.out.split("\n")[0]).toBe(`  0  ${list[0].backend}  ${list[0].name}`);
    const byIndex = siri(["gpu", "--adapter", "0", "--json"]);
    expect(byIndex.code).toBe(0);
    expect(JSON.parse(byIndex.out).adapter.chosen).toBe(`index 0 of ${list.length} ("${list[0].name}")`);
    // A part of the name, in other case: still that adapter (when no other adapter has it).
    const part = list[0].name.slice(0, 4).toUpperCase();
    if (list.filter((a) => a.name.toUpperCase().includes(part)).length === 1) {
      const byName = siri(["gpu", "--adapter", part, "--json"]);
      expect(byName.code).toBe(0);
      expect(JSON.parse(byName.out).adapter.chosen).toBe(`"${part}": index 0 of ${list.length} ("${list[0].name}")`);
    }
    const n = String(list.length);
    const bad = siri(["gpu", "--adapter", n]);
    expect(bad.code).toBe(1);
    expect(bad.err).toContain(`--adapter ${n}: out of range`);
  });

  test("every command that takes --adapter refuses an index out of range with that error, before any work", async () => {
    expect((await adapterCommands(main)).sort()).toEqual(["bench", "experiment pareto", "generate", "gpu", "logits", "train", "worker"]);
    const model = join(ROOT, "model");
    makeTinyModel(model, { seed: 1 });
    const n = String(JSON.parse(siri(["gpu", "--list-adapters", "--json"]).out).length);
    const fixture = join(import.meta.dir, "..", "datasets/fixtures/tiny.jsonl");
    const lines: Record<string, string[]> = {
      generate: ["generate", "--model", model, "--prompt", "1+1"],
      logits: ["logits", "--model", model, "--tokens", "1,2"],
      bench: ["bench", "--model", model, "--dataset", fixture, "--limit", "1", "--n", "1", "--max-tokens", "4", "--out", join(ROOT, "bench")],
      train: ["train", "--preset", "demo", "--out", join(ROOT, "train"), "--no-progress"],
      worker: ["worker", "--broker", "redis://127.0.0.1:1"],
      "experiment pareto": ["experiment", "pareto", "--quick", "--out", join(ROOT, "pareto")],
    };
    for (const [name, line] of Object.entries(lines)) {
      const r = siri([...line, "--adapter", n]);
      expect([name, r.code, r.err.includes(`--adapter ${n}: out of range`)]).toEqual([name, 1, true]);
    }
  }, 120_000);
});

// Two identical adapters on this machine: the software one listed twice, through two copies of its Vulkan driver
// manifest. It exercises the whole index path below Dawn (the C environment, Mesa's device-select layer, the second
// listing), though DRI_PRIME picks among GPUs only, so for CPU twins the right answer is an error.
const LVP_ICD = "/usr/share/vulkan/icd.d/lvp_icd.json";
const LAYER = "/usr/share/vulkan/implicit_layer.d/VkLayer_MESA_device_select.json";
const twinsMissing = !GPU ? "no adapter" : !existsSync(LVP_ICD) ? `no ${LVP_ICD}` : !existsSync(LAYER) ? `no ${LAYER}` : null;
if (twinsMissing) {
  if (process.env.CI === "true" && GPU) throw new Error(`CI=true and ${twinsMissing} (scripts/setup.sh installs mesa-vulkan-drivers)`);
  console.warn(`[tests] identical-adapter tests skipped: ${twinsMissing}`);
}
describe.skipIf(twinsMissing !== null)("--adapter with two identical adapters (lavapipe twice)", () => {
  const twins = () => {
    const a = join(ROOT, "lvp-a.json");
    const b = join(ROOT, "lvp-b.json");
    copyFileSync(LVP_ICD, a);
    copyFileSync(LVP_ICD, b);
    return { VK_ICD_FILENAMES: `${a}:${b}` };
  };

  test("listed with indices 0 and 1; a name is ambiguous; index 0 opens; index 1 reaches the device-select layer, which cannot pick a CPU twin: an error", () => {
    const env = twins();
    const list = JSON.parse(siri(["gpu", "--list-adapters", "--json"], env).out) as ListedAdapter[];
    expect(list.length).toBe(2);
    expect(list[1].name).toBe(list[0].name);
    const name = siri(["gpu", "--adapter", list[0].name.slice(0, 4)], env);
    expect([name.code, name.err]).toEqual([1, expect.stringContaining("matches 2 identical adapters (indices 0, 1): give the index of one")]);
    const zero = siri(["gpu", "--adapter", "0", "--json"], env);
    expect(zero.code).toBe(0);
    expect(JSON.parse(zero.out).adapter.chosen).toBe(`index 0 of 2 ("${list[0].name}")`);
    // With the layer: Vulkan narrowed to one adapter (else the error below), which is the CPU default, not twin 1.
    const one = siri(["gpu", "--adapter", "1"], env);
    expect([one.code, one.err]).toEqual([1, expect.stringContaining("--adapter 1: adapter 1 (\"" + list[0].name + "\") is one of several identical CPU (fallback) adapters")]);
    // Without it (NODEVICE_SELECT disables it): Vulkan still shows both, and the error says what is missing.
    const off = siri(["gpu", "--adapter", "1"], { ...env, NODEVICE_SELECT: "1" });
    expect([off.code, off.err]).toEqual([1, expect.stringContaining("--adapter 1: with DRI_PRIME=1 MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 Vulkan should show only adapter 1")]);
    expect(off.err).toContain("Mesa's Vulkan device-select layer is missing");
    expect(siri(["gpu", "--adapter", "2"], env).err).toContain("--adapter 2: out of range, there are 2 adapters (indices 0..1)");
  }, 120_000);
});
