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

/**
 * A token id the tokenizer does not know (e.g. a padded row of the model's
 * vocabulary, ids >= `size`), met by `decode`. Callers that must not stop a
 * long run on one (rollouts, bench) use `decodeKnown`, which never throws.
 */
export class UnknownTokenIdError extends Error {
  override name = "UnknownTokenIdError";
  constructor(
    readonly id: number,
    readonly index: number,
    readonly size: number,
    label: string,
  ) {
    super(`${label}: decode: token id ${id} (at position ${index} of the ids) is outside the tokenizer's ids [0, ${size})`);
  }
}

/**
 * Encoding met a piece the vocabulary lacks (no id, no unknown token): the
 * text position (UTF-16 offset) and the piece are named.
 */
export class UnencodableTextError extends Error {
  override name = "UnencodableTextError";
  constructor(
    readonly offset: number,
    readonly piece: string,
    label: string,
  ) {
    super(`${label}: encode: the text at offset ${offset} (piece ${JSON.stringify(piece)}) has no token id in the vocabulary and the tokenizer has no unk_token`);
  }
}

export interface LoadedTokenizer {
  /** Token ids of `text`; special-token strings inside it map to their ids. Throws UnencodableTextError rather than return a hole. */
  encode(text: string): number[];
  /** Text of `ids`; an id outside [0, size) throws UnknownTokenIdError. */
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  /**
   * Like decode, but never throws for unknown ids: they are dropped from
   * the text and listed in `unknown` (a named condition the caller reports).
   */
  decodeKnown(ids: number[], opts?: { skipSpecialTokens?: boolean }): { text: string; unknown: number[] };
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
  // Checked here: the library would fail on it with a bare TypeError naming no file.
  const vocab = tj.model.vocab as unknown;
  if (typeof vocab !== "object" || vocab === null) {
    throw new Error(`${tjFile}: field "model.vocab" ${vocab === undefined ? "is missing" : `must be an object {token: id}, got ${JSON.stringify(vocab)}`}`);
  }
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
  // A template that cannot parse or render a plain user turn is an error now, naming its file,
  // not later from inside a bench or a training run.
  if (template !== null) {
    try {
      renderChatTemplate(template, [{ role: "user", content: "1 + 1 = ?" }], { bosToken, eosToken, padToken, addGenerationPrompt: true });
    } catch (e) {
      throw new Error(`${tcFile}: field "chat_template": ${(e as Error).message}`);
    }
  }

  // Holes are possible only without an unk token; the check needs byte-level decoding (lossless).
  const model = tj.model as { unk_token?: unknown };
  const byteLevel = JSON.stringify((tokenizerJson as { decoder?: unknown }).decoder ?? null).includes('"ByteLevel"');
  const checkRoundTrip = (model.unk_token === null || model.unk_token === undefined) && byteLevel;
  const libNormalizer = (tok as unknown as { normalizer: ((s: string) => string) | null }).normalizer;
  const normalize = (s: string) => (libNormalizer ? libNormalizer(s) : s);
  const known = (id: number) => Number.isInteger(id) && id >= 0 && id < size && tok.id_to_token(id) !== undefined;
  const rawDecode = (ids: number[], skip?: boolean) =>
    ids.length === 0 ? "" : tok.decode(ids, { skip_special_tokens: skip ?? false, clean_up_tokenization_spaces: false });

  return {
    encode(text) {
      const enc = tok.encode(text, { add_special_tokens: false });
      const ids = enc.ids as (number | undefined | null)[];
      const bad = ids.findIndex((id) => typeof id !== "number" || !Number.isInteger(id));
      if (bad >= 0) {
        // Offset of the piece: the text of the (valid) ids before it.
        const offset = rawDecode(ids.slice(0, bad) as number[]).length;
        throw new UnencodableTextError(offset, enc.tokens[bad] ?? "", tjFile);
      }
      // Without an unk token a BPE model drops a piece it has no id for (a
      // silent hole): a byte-level tokenizer must decode back to its
      // normalised input, so the first difference is the hole.
      if (checkRoundTrip) {
        const want = normalize(text);
        const got = rawDecode(ids as number[]);
        if (got !== want) {
          let i = 0;
          while (i < got.length && got[i] === want[i]) i++;
          throw new UnencodableTextError(i, want.slice(i, i + 8), tjFile);
        }
      }
      return ids as number[];
    },
    decode(ids, opts = {}) {
      ids.forEach((id, i) => {
        if (!known(id)) throw new UnknownTokenIdError(id, i, size, tjFile);
      });
      return rawDecode(ids, opts.skipSpecialTokens);
    },
    decodeKnown(ids, opts = {}) {
      const unknown = ids.filter((id) => !known(id));
      return { text: rawDecode(unknown.length ? ids.filter(known) : ids, opts.skipSpecialTokens), unknown };
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
      try {
        return renderChatTemplate(template, messages, { bosToken, eosToken, padToken, ...opts });
      } catch (e) {
        throw new Error(`${tcFile}: field "chat_template": ${(e as Error).message}`);
      }
    },
  };
}

/**
 * The ids a model may emit: the tokenizer's size, or the config's
 * vocab_size if smaller. Qwen2 checkpoints pad vocab_size (151936) above
 * the tokenizer's 151665 ids; the sampler masks the rows at or above this.
 */
export function vocabLimit(vocabSize: number, tokenizer: Pick<LoadedTokenizer, "size">): number {
  return Math.min(vocabSize, tokenizer.size);
}

/**
 * A response's text for grading (special tokens dropped). Ids the tokenizer
 * lacks cannot come from a masked sampler; if one ever does, it is left out
 * and reported through `warn`, and the run goes on.
 */
export function decodeRollout(tokenizer: LoadedTokenizer, ids: number[], warn: (s: string) => void): string {
  const { text, unknown } = tokenizer.decodeKnown(ids, { skipSpecialTokens: true });
  if (unknown.length) warn(`rollout: ${unknown.length} token id(s) outside the tokenizer's ${tokenizer.size} ids (${unknown.slice(0, 5).join(", ")}) left out of the graded text`);
  return text;
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
