// The tokenizer (tokenizer.json through @huggingface/tokenizers) and the chat
// template (tokenizer_config.json's chat_template through @huggingface/jinja),
// rendered with the same variables transformers' apply_chat_template passes.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";

export interface ChatMessage {
  role: string; // "system" | "user" | "assistant" | "tool"
  content: string | null;
  [key: string]: unknown;
}

export interface ChatOptions {
  addGenerationPrompt?: boolean;
  /** Extra template variables (transformers' **kwargs to apply_chat_template). */
  extra?: Record<string, unknown>;
}

export interface LoadedTokenizer {
  /** Token ids of `text`; special-token strings inside it map to their ids. */
  encode(text: string): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  idToToken(id: number): string | undefined;
  /** Number of ids (model vocab plus added tokens): max id + 1. */
  size: number;
  bosToken: string | null;
  eosToken: string | null;
  padToken: string | null;
  bosTokenId: number | null;
  /** Ids that end a generation: tokenizer_config's eos_token plus generation_config.json's eos_token_id. */
  eosTokenIds: number[];
  /** Added tokens marked special (skipped by decode with skipSpecialTokens). */
  specialTokens: Map<string, number>;
  chatTemplate: string | null;
  applyChatTemplate(messages: ChatMessage[], opts?: ChatOptions): string;
}

/** A tokenizer_config.json token field: a string or an AddedToken object {content}. */
function tokenString(v: unknown, file: string, field: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  if (typeof v === "object" && typeof (v as { content?: unknown }).content === "string") return (v as { content: string }).content;
  throw new Error(`${file}: field "${field}": expected a string or {content: string}, got ${JSON.stringify(v)}`);
}

/**
 * Render a chat template as transformers does: `messages`,
 * `add_generation_prompt`, the special tokens as strings (bos_token,
 * eos_token, pad_token, unk_token); the jinja package supplies
 * `raise_exception` and `strftime_now` and uses trim_blocks and lstrip_blocks
 * like transformers.
 */
export function renderChatTemplate(
  template: string,
  messages: ChatMessage[],
  vars: { bosToken?: string | null; eosToken?: string | null; padToken?: string | null; unkToken?: string | null } & ChatOptions = {},
): string {
  let t: Template;
  try {
    t = new Template(template);
  } catch (e) {
    throw new Error(`chat_template: cannot parse: ${(e as Error).message}`);
  }
  const items: Record<string, unknown> = {
    messages,
    add_generation_prompt: vars.addGenerationPrompt ?? false,
    ...vars.extra,
  };
  if (vars.bosToken != null) items.bos_token = vars.bosToken;
  if (vars.eosToken != null) items.eos_token = vars.eosToken;
  if (vars.padToken != null) items.pad_token = vars.padToken;
  if (vars.unkToken != null) items.unk_token = vars.unkToken;
  return t.render(items);
}

/**
 * Build from parsed tokenizer.json and tokenizer_config.json objects;
 * `generationEos` are generation_config.json's eos ids, `label` names the source.
 */
export function tokenizerFromJson(tokenizerJson: unknown, tokenizerConfig: unknown, label = "tokenizer", generationEos: number[] = []): LoadedTokenizer {
  const tjFile = `${label}/tokenizer.json`;
  const tcFile = `${label}/tokenizer_config.json`;
  if (typeof tokenizerJson !== "object" || tokenizerJson === null) throw new Error(`${tjFile}: expected a JSON object`);
  if (typeof tokenizerConfig !== "object" || tokenizerConfig === null) throw new Error(`${tcFile}: expected a JSON object`);
  const tj = tokenizerJson as { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number; content: string; special?: boolean }[] };
  if (!tj.model || typeof tj.model !== "object") throw new Error(`${tjFile}: field "model" is missing`);
  const cfg = tokenizerConfig as Record<string, unknown>;
  // Turn AddedToken-object fields into plain strings for the library.
  const plainCfg: Record<string, unknown> = { ...cfg };
  for (const f of ["bos_token", "eos_token", "pad_token", "unk_token"]) plainCfg[f] = tokenString(cfg[f], tcFile, f);
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson as object, plainCfg);
  } catch (e) {
    throw new Error(`${tjFile}: cannot build the tokenizer: ${(e as Error).message}`);
  }
  const bosToken = plainCfg.bos_token as string | null;
  const eosToken = plainCfg.eos_token as string | null;
  const padToken = plainCfg.pad_token as string | null;
  const idOf = (s: string | null, field: string): number | null => {
    if (s === null) return null;
    const id = tok.token_to_id(s);
    if (id === undefined) throw new Error(`${tcFile}: field "${field}" is "${s}", which is not in ${tjFile}`);
    return id;
  };
  const bosTokenId = idOf(bosToken, "bos_token");
  const eosId = idOf(eosToken, "eos_token");
  idOf(padToken, "pad_token");
  const eosTokenIds = [...new Set([...(eosId === null ? [] : [eosId]), ...generationEos])];

  const specialTokens = new Map<string, number>();
  let maxId = -1;
  for (const id of Object.values(tj.model.vocab ?? {})) maxId = Math.max(maxId, id);
  for (const a of tj.added_tokens ?? []) {
    maxId = Math.max(maxId, a.id);
    if (a.special) specialTokens.set(a.content, a.id);
  }
  let chatTemplate: string | null = null;
  const ct = cfg.chat_template;
  if (typeof ct === "string") chatTemplate = ct;
  else if (Array.isArray(ct)) {
    // transformers' list form [{name, template}]: "default" is the one used.
    const d = ct.find((x) => (x as { name?: string }).name === "default") as { template?: string } | undefined;
    chatTemplate = d?.template ?? null;
  } else if (ct !== undefined && ct !== null) throw new Error(`${tcFile}: field "chat_template" must be a string`);
  const template = chatTemplate;
  const size = maxId + 1;

  return {
    encode: (text) => tok.encode(text, { add_special_tokens: false }).ids,
    decode(ids, opts = {}) {
      if (ids.length === 0) return "";
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id >= size) throw new Error(`${tjFile}: decode: token id ${id} is outside [0, ${size})`);
      }
      return tok.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
    },
    tokenToId: (t) => tok.token_to_id(t),
    idToToken: (i) => tok.id_to_token(i),
    size,
    bosToken,
    eosToken,
    padToken,
    bosTokenId,
    eosTokenIds,
    specialTokens,
    chatTemplate: template,
    applyChatTemplate(messages, opts = {}) {
      if (template === null) throw new Error(`${tcFile}: no "chat_template"; cannot format chat messages`);
      return renderChatTemplate(template, messages, { bosToken, eosToken, padToken, ...opts });
    },
  };
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`${file}: cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: invalid JSON: ${(e as Error).message}`);
  }
}

/** Load tokenizer.json, tokenizer_config.json and (if present) generation_config.json from a model directory. */
export function loadTokenizer(dir: string): LoadedTokenizer {
  const tj = readJson(join(dir, "tokenizer.json"));
  const tc = readJson(join(dir, "tokenizer_config.json"));
  let genEos: number[] = [];
  const gcFile = join(dir, "generation_config.json");
  if (existsSync(gcFile)) {
    const e = (readJson(gcFile) as { eos_token_id?: unknown } | null)?.eos_token_id;
    const list = Array.isArray(e) ? e : e === undefined || e === null ? [] : [e];
    for (const id of list) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new Error(`${gcFile}: field "eos_token_id": expected token ids, got ${JSON.stringify(e)}`);
    }
    genEos = list as number[];
  }
  const t = tokenizerFromJson(tj, tc, dir, genEos);
  for (const id of genEos) {
    if (id >= t.size) throw new Error(`${gcFile}: eos_token_id ${id} is outside the tokenizer's ${t.size} ids`);
  }
  return t;
}
