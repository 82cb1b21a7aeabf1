/**
 * The datasets SIRI trains and evaluates on, as Hugging Face Hub presets:
 * the repository, the files to fetch from its main branch, and the field map.
 * Sources checked on the Hub's file listings and dataset cards.
 */
import type { FieldMap } from "./load.ts";

export interface Preset {
  name: string;
  aliases: string[];
  title: string;
  /** Hub dataset repository, "owner/name". */
  repo: string;
  /** Files under the repo's main branch; their rows are concatenated in this order. */
  files: string[];
  fields: FieldMap;
  /** Expected number of problems, when the set is fixed (a mismatch is reported). */
  count?: number;
  use: "train" | "eval";
  note: string;
}

export const PRESETS: Preset[] = [
  {
    name: "deepscaler",
    aliases: ["deepscaler-preview", "DeepScaleR-Preview"],
    title: "DeepScaleR-Preview (~40.3K problems: AIME 1983-2023, AMC, Omni-MATH, STILL)",
    repo: "agentica-org/DeepScaleR-Preview-Dataset",
    files: ["deepscaler.json"],
    fields: { problem: "problem", answer: "answer", solution: "solution" },
    use: "train",
    note: "SIRI's training set; one JSON array of {problem, answer, solution}; no ids (row index is used)",
  },
  {
    name: "aime24",
    aliases: ["aime2024", "aime_2024"],
    title: "AIME 2024 (I and II, 30 problems, integer answers)",
    repo: "HuggingFaceH4/aime_2024",
    files: ["data/train-00000-of-00001.parquet"],
    fields: { problem: "problem", answer: "answer", solution: "solution", id: "id" },
    count: 30,
    use: "eval",
    note: "columns id, problem, solution, answer, url, year",
  },
  {
    name: "aime25",
    aliases: ["aime2025", "aime_2025"],
    title: "AIME 2025 (I and II, 30 problems, integer answers)",
    repo: "opencompass/AIME2025",
    files: ["aime2025-I.jsonl", "aime2025-II.jsonl"],
    fields: { problem: "question", answer: "answer" },
    count: 30,
    use: "eval",
    note: "two JSONL files of {question, answer}; ids are <file>-<row>",
  },
  {
    name: "math500",
    aliases: ["math-500", "MATH500"],
    title: "MATH500 (500 problems from the MATH test split, Lightman et al.)",
    repo: "HuggingFaceH4/MATH-500",
    files: ["test.jsonl"],
    fields: { problem: "problem", answer: "answer", solution: "solution", id: "unique_id", keep: ["subject", "level"] },
    count: 500,
    use: "eval",
    note: "columns problem, solution, answer, subject, level, unique_id",
  },
  {
    name: "amc",
    aliases: ["amc23", "amc22-23"],
    title: "AMC 2022-2023 (83 problems, the AMC set DeepScaleR and SIRI report)",
    repo: "AI-MO/aimo-validation-amc",
    files: ["data/train-00000-of-00001.parquet"],
    fields: { problem: "problem", answer: "answer", id: "id" },
    count: 83,
    use: "eval",
    note: "columns id, problem, answer (numeric answers such as 142.0 are read as \"142\"), url",
  },
];

/** The preset with this name or alias (case-insensitive), or undefined. */
export function findPreset(name: string): Preset | undefined {
  const n = name.toLowerCase();
  return PRESETS.find((p) => p.name === n || p.aliases.some((a) => a.toLowerCase() === n));
}

export function presetOrThrow(name: string): Preset {
  const p = findPreset(name);
  if (!p) throw new Error(`unknown dataset preset "${name}"; known: ${PRESETS.map((x) => x.name).join(", ")}`);
  return p;
}
