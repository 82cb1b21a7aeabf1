/**
 * The prompt SIRI trains and evaluates with: DeepScaleR's, i.e. the problem,
 * a space, then the instruction below, as the single user turn, rendered
 * through the model's own chat template (a Jinja string from
 * tokenizer_config.json) with the generation prompt appended.
 */
import { Template } from "@huggingface/jinja";

export const DEEPSCALER_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}.";

/** The user turn: problem + " " + instruction. */
export function userMessage(problem: string, instruction = DEEPSCALER_INSTRUCTION): string {
  return `${problem} ${instruction}`;
}

/** tokenizer_config.json stores special tokens as strings or as {content: "..."} objects. */
export type SpecialTokens = Record<string, string | { content: string } | null | undefined>;

export interface PromptOptions {
  instruction?: string;
  /** A system turn before the user turn (DeepScaleR and SIRI use none). */
  system?: string;
}

/** Parsed templates, by source text: rendering is per prompt, parsing once is enough. */
const parsed = new Map<string, Template>();

/**
 * Render the prompt text for one problem. `specialTokens` supplies
 * bos_token, eos_token, ... as the template expects them.
 */
export function renderPrompt(problem: string, chatTemplate: string, specialTokens: SpecialTokens = {}, opts: PromptOptions = {}): string {
  if (typeof chatTemplate !== "string" || chatTemplate.length === 0) {
    throw new Error("renderPrompt: chat template is empty; pass tokenizer_config.json's chat_template string");
  }
  let tpl = parsed.get(chatTemplate);
  if (!tpl) {
    try {
      tpl = new Template(chatTemplate);
    } catch (e) {
      throw new Error(`renderPrompt: chat template does not parse: ${(e as Error).message}`);
    }
    parsed.set(chatTemplate, tpl);
  }
  const tokens: Record<string, string> = {};
  for (const [k, v] of Object.entries(specialTokens)) {
    if (v === null || v === undefined) continue;
    tokens[k] = typeof v === "string" ? v : v.content;
  }
  const messages = [
    ...(opts.system !== undefined ? [{ role: "system", content: opts.system }] : []),
    { role: "user", content: userMessage(problem, opts.instruction) },
  ];
  try {
    return tpl.render({
      ...tokens,
      messages,
      add_generation_prompt: true, // raise_exception is a built-in of @huggingface/jinja
    });
  } catch (e) {
    throw new Error(`renderPrompt: chat template failed to render: ${(e as Error).message}`);
  }
}
