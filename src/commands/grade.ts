// `siri grade`: extract the final answer of a response and grade it, for one
// response or a JSONL file of them.
import { readFileSync, writeFileSync } from "node:fs";
import { defineCommand } from "citty";
import { gradeResponse } from "../grade/reward.ts";
import { log } from "../log.ts";

/** A gold answer or response field: strings as they are, numbers as written. */
function field(obj: Record<string, unknown>, name: string, where: string): string {
  const v = obj[name];
  if (typeof v === "string") return v;
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  throw new Error(`${where}: field "${name}" must be a string (or number), got ${v === undefined ? "nothing" : JSON.stringify(v)}`);
}

/** Grade every line of a JSONL file; returns the output lines, in order. */
export function gradeJsonl(text: string, file: string, afterThink: boolean): { lines: string[]; correct: number } {
  const lines: string[] = [];
  let correct = 0;
  const rows = text.split("\n");
  for (let i = 0; i < rows.length; i++) {
    const row = rows[i].trim();
    if (row === "") continue;
    const where = `${file}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(row);
    } catch (e) {
      throw new Error(`${where}: not valid JSON (${(e as Error).message})`);
    }
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
      throw new Error(`${where}: expected an object {"gold": ..., "response": ...}`);
    }
    const o = obj as Record<string, unknown>;
    const g = gradeResponse(field(o, "response", where), field(o, "gold", where), { afterThink });
    if (g.correct) correct++;
    lines.push(JSON.stringify({ ...o, extracted: g.extracted, correct: g.correct }));
  }
  return { lines, correct };
}

export default defineCommand({
  meta: { name: "grade", description: "Extract the last \\boxed{} answer of a response and grade it against the reference" },
  args: {
    gold: { type: "string", description: "Reference answer (with --response)" },
    response: { type: "string", description: "Model response text (with --gold)" },
    file: { type: "string", description: 'JSONL file of {"gold": ..., "response": ...} lines (other fields kept)' },
    out: { type: "string", description: "With --file: write the graded JSONL here instead of stdout" },
    "after-think": {
      type: "boolean",
      description: "DeepScaleR's rule: take the answer only from the text after </think> (none without it)",
    },
    json: { type: "boolean", description: "With --gold/--response: print one JSON object" },
  },
  run({ args }) {
    const afterThink = Boolean(args["after-think"]);
    if (args.file) {
      if (args.gold !== undefined || args.response !== undefined) throw new Error("grade: use either --file or --gold/--response, not both");
      let text: string;
      try {
        text = readFileSync(args.file, "utf8");
      } catch (e) {
        throw new Error(`grade: cannot read --file ${args.file}: ${(e as Error).message}`);
      }
      const t0 = performance.now();
      const { lines, correct } = gradeJsonl(text, args.file, afterThink);
      const ms = performance.now() - t0;
      const body = lines.map((l) => l + "\n").join("");
      if (args.out) writeFileSync(args.out, body);
      else process.stdout.write(body);
      const rate = lines.length / Math.max(ms / 1000, 1e-9);
      log.info(`graded ${lines.length} responses: ${correct} correct, ${ms.toFixed(0)} ms (${rate.toFixed(0)}/s)`);
      return;
    }
    if (args.gold === undefined || args.response === undefined) {
      throw new Error("grade: give --gold X --response Y, or --file cases.jsonl");
    }
    const g = gradeResponse(args.response, args.gold, { afterThink });
    if (args.json) {
      console.log(JSON.stringify({ gold: args.gold, extracted: g.extracted, correct: g.correct }));
    } else {
      console.log(`extracted  ${g.extracted ?? "(none)"}`);
      console.log(`verdict    ${g.correct ? "correct" : "wrong"}`);
    }
  },
});
