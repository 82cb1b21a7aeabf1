// Tokenizer and chat template: the DeepSeek-R1-Distill template renders the
// way transformers' apply_chat_template does; the tiny model's own BPE
// tokenizer loads through @huggingface/tokenizers and round-trips text.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { loadTokenizer, renderChatTemplate, tokenizerFromJson, UnencodableTextError, UnknownTokenIdError } from "../src/model/tokenizer.ts";
import { BOS, DEEPSEEK_R1_DISTILL_CHAT_TEMPLATE, EOS, TINY_CORPUS, buildTinyTokenizer, byteToUnicode, makeTinyModel, trainBpe } from "../src/model/tiny.ts";

const tmp = mkdtempSync(join(tmpdir(), "siri-tokenizer-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const dir = join(tmp, "tiny");
makeTinyModel(dir, { preset: "tiny" });
const tok = loadTokenizer(dir);

// The chat_template of deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B's tokenizer_config.json
// (the revision that appends "<think>\n" to the generation prompt; the whole
// R1-Distill family shares it). Found with the code search (query
// "DeepSeek-R1-Distill-Qwen tokenizer_config.json chat_template"): quoted
// verbatim from the model's tokenizer_config.json in public repositories,
// e.g. a tokenizer_config.json diff in a Bedrock custom-model-import guide and
// a llama.cpp convert_hf_to_gguf log that prints the template.
const TEMPLATE = readFileSync(join(import.meta.dir, "fixtures/deepseek_r1_distill_chat_template.jinja"), "utf8");

describe("DeepSeek-R1-Distill chat template", () => {
  const render = (messages: { role: string; content: string | null }[], addGenerationPrompt: boolean) =>
    renderChatTemplate(TEMPLATE, messages, { bosToken: BOS, eosToken: EOS, addGenerationPrompt });

  test("one user turn with add_generation_prompt opens the think block", () => {
    const problem = "What is $1+1$? Let's think step by step and output the final answer within \\boxed{}.";
    expect(render([{ role: "user", content: problem }], true)).toBe(`<｜begin▁of▁sentence｜><｜User｜>${problem}<｜Assistant｜><think>\n`);
  });

  test("without add_generation_prompt there is no assistant header", () => {
    expect(render([{ role: "user", content: "hi" }], false)).toBe("<｜begin▁of▁sentence｜><｜User｜>hi");
  });

  test("system prompt goes first; assistant turns drop their reasoning and end with EOS", () => {
    const got = render(
      [
        { role: "system", content: "Be brief." },
        { role: "user", content: "2+2?" },
        { role: "assistant", content: "<think>\n2+2 is 4\n</think>\n\nThe answer is 4." },
        { role: "user", content: "And 3+3?" },
      ],
      true,
    );
    expect(got).toBe("<｜begin▁of▁sentence｜>Be brief.<｜User｜>2+2?<｜Assistant｜>\n\nThe answer is 4.<｜end▁of▁sentence｜><｜User｜>And 3+3?<｜Assistant｜><think>\n");
  });

  test("make-tiny-model writes this same template", () => {
    expect(DEEPSEEK_R1_DISTILL_CHAT_TEMPLATE).toBe(TEMPLATE);
    expect(JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")).chat_template).toBe(TEMPLATE);
    expect(tok.chatTemplate).toBe(TEMPLATE);
  });

  test("a broken template is a clear error", () => {
    expect(() => renderChatTemplate("{% if %}", [])).toThrow(/^chat_template: cannot parse/);
  });
});

describe("BPE trainer and byte map", () => {
  test("GPT-2 byte map: 256 distinct printable characters; space is Ġ, newline Ċ, 'A' itself", () => {
    const m = byteToUnicode();
    expect(new Set(m).size).toBe(256);
    expect(m[32]).toBe("Ġ");
    expect(m[10]).toBe("Ċ");
    expect(m[65]).toBe("A");
    expect(m.every((c) => !/\s/u.test(c))).toBe(true);
  });

  test("hand-checked merges: most frequent pair first, ties broken by the smaller pair", () => {
    // "aaab" and " aaab": pairs (a,a) x4, (a,b) x2, (Ġ,a) x1 -> merge a+a.
    // Then (aa,a) x2 and (a,b) x2 tie; "a\0b" < "aa\0a" -> merge a+b. Then (aa,ab) x2.
    expect(trainBpe("aaab aaab", 3)).toEqual([["a", "a"], ["a", "b"], ["aa", "ab"]]);
    expect(trainBpe("xy", 5)).toEqual([]); // no pair occurs twice
  });

  test("the tiny vocabulary: 256 bytes, a few hundred merges, 7 added tokens", () => {
    const t = buildTinyTokenizer();
    const model = t.tokenizerJson.model as { vocab: Record<string, number>; merges: string[] };
    expect(Object.keys(model.vocab).length).toBe(t.size - 7);
    expect(model.merges.length).toBeGreaterThanOrEqual(200);
    for (const c of byteToUnicode()) expect(model.vocab[c]).toBeLessThan(256);
    // Every merge's parts exist before it.
    for (const m of model.merges) {
      const [a, b] = m.split(" ");
      expect(model.vocab[a]).toBeLessThan(model.vocab[a + b]);
      expect(model.vocab[b]).toBeLessThan(model.vocab[a + b]);
    }
    // The merges compress the corpus they were trained on.
    const ids = tok.encode(TINY_CORPUS);
    expect(ids.length).toBeLessThan(new TextEncoder().encode(TINY_CORPUS).length / 2);
  });
});

describe("tiny tokenizer through @huggingface/tokenizers", () => {
  test("special tokens, BOS/EOS ids and vocabulary size", () => {
    const cfg = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    expect(tok.size).toBe(cfg.vocab_size);
    expect(tok.bosToken).toBe(BOS);
    expect(tok.eosToken).toBe(EOS);
    expect(tok.bosTokenId).toBe(cfg.bos_token_id);
    expect(tok.eosTokenIds).toEqual([cfg.eos_token_id]);
    expect(tok.tokenToId(EOS)).toBe(cfg.eos_token_id);
    for (const s of [BOS, EOS, "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "<｜▁pad▁｜>"]) {
      const id = tok.tokenToId(s)!;
      expect(id).toBeGreaterThanOrEqual(tok.size - 7);
      expect(tok.encode(s)).toEqual([id]);
      expect(tok.idToToken(id)).toBe(s);
    }
    expect([...tok.specialTokens.keys()].sort()).toEqual([BOS, EOS, "<｜▁pad▁｜>"].sort());
  });

  test("a chat prompt encodes with its markers as single tokens", () => {
    const prompt = tok.applyChatTemplate([{ role: "user", content: "Find x." }], { addGenerationPrompt: true });
    expect(prompt).toBe(`${BOS}<｜User｜>Find x.<｜Assistant｜><think>\n`);
    const ids = tok.encode(prompt);
    const id = (s: string) => tok.tokenToId(s)!;
    expect(ids.slice(0, 2)).toEqual([id(BOS), id("<｜User｜>")]);
    expect(ids.slice(-3)).toEqual([id("<｜Assistant｜>"), id("<think>"), id("Ċ")]);
    expect(tok.decode(ids)).toBe(prompt);
    // Skipping special tokens drops BOS/EOS but keeps the think markers.
    expect(tok.decode([...ids, id(EOS)], { skipSpecialTokens: true })).toBe("<｜User｜>Find x.<｜Assistant｜><think>\n");
  });

  test("encode -> decode round-trips arbitrary text (NFC, as the Qwen2 normalizer leaves it)", () => {
    const fixed = ["", " ", "  leading and trailing  ", "a\n\n\tb\r\nc", "x^2 - 5x + 6 = 0 ⇒ x ∈ {2, 3}", "你好，世界", "🙂👍🏽 emoji", "don't we'll THEY'RE", "12345678901234567890", "\\boxed{\\frac{1}{2}}", "<think>x</think>"];
    let s = 12345;
    const rand = () => ((s = (s * 1103515245 + 12345) >>> 0), s / 2 ** 32);
    const pools = [" abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,;:!?'\"()[]{}\\^_$+-*/=<>\n\t", "éüßøñ€∑∫√πθ漢字かなカナ한국어", "🙂🚀🎉"];
    const randomText = () => {
      const len = Math.floor(rand() * 40);
      let out = "";
      for (let i = 0; i < len; i++) {
        const pool = [...pools[Math.floor(rand() * pools.length)]];
        out += pool[Math.floor(rand() * pool.length)];
      }
      return out;
    };
    const texts = [...fixed, ...Array.from({ length: 300 }, randomText)].map((t) => t.normalize("NFC"));
    for (const t of texts) {
      const ids = tok.encode(t);
      for (const id of ids) expect(id >= 0 && id < tok.size).toBe(true);
      const back = tok.decode(ids);
      if (back !== t) throw new Error(`round trip failed: ${JSON.stringify(t)} -> ${JSON.stringify(ids)} -> ${JSON.stringify(back)}`);
    }
    // Random bytes of any UTF-8 character (no lone surrogates) also survive.
    for (let k = 0; k < 100; k++) {
      let t = "";
      for (let i = 0; i < 20; i++) {
        let cp = Math.floor(rand() * 0x10ffff);
        if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
        t += String.fromCodePoint(cp);
      }
      t = t.normalize("NFC");
      expect(tok.decode(tok.encode(t))).toBe(t);
    }
  });

  test("the same files load directly in @huggingface/tokenizers and give the same ids", () => {
    const tj = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    const tc = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    const raw = new Tokenizer(tj, { ...tc, bos_token: BOS, eos_token: EOS, pad_token: "<｜▁pad▁｜>" });
    for (const t of ["Let's think step by step.", TINY_CORPUS.slice(0, 300), `${BOS}<｜User｜>2+2?<｜Assistant｜><think>\n`]) {
      expect(raw.encode(t, { add_special_tokens: false }).ids).toEqual(tok.encode(t));
    }
  });
});

describe("tokenizer errors", () => {
  test("eos_token absent from the vocabulary names the file and field", () => {
    const t = buildTinyTokenizer();
    expect(() => tokenizerFromJson(t.tokenizerJson, { ...t.tokenizerConfig, eos_token: "<nope>" }, "/m")).toThrow('/m/tokenizer_config.json: field "eos_token" is "<nope>", which is not in /m/tokenizer.json');
    expect(() => tokenizerFromJson(t.tokenizerJson, { ...t.tokenizerConfig, bos_token: 5 }, "/m")).toThrow('/m/tokenizer_config.json: field "bos_token": expected a string or {content: string}');
    expect(() => tokenizerFromJson({ version: "1.0" }, t.tokenizerConfig, "/m")).toThrow('/m/tokenizer.json: field "model" is missing');
    const noTemplate = tokenizerFromJson(t.tokenizerJson, { ...t.tokenizerConfig, chat_template: undefined }, "/m");
    expect(() => noTemplate.applyChatTemplate([{ role: "user", content: "x" }])).toThrow('/m/tokenizer_config.json: no "chat_template"');
  });

  test("missing or invalid files name their path; decode rejects ids outside the vocabulary", () => {
    expect(() => loadTokenizer(join(tmp, "nowhere"))).toThrow(`${join(tmp, "nowhere", "tokenizer.json")}: cannot read`);
    const d = join(tmp, "badgen");
    makeTinyModel(d);
    writeFileSync(join(d, "generation_config.json"), JSON.stringify({ eos_token_id: [1e9] }));
    expect(() => loadTokenizer(d)).toThrow(`${join(d, "generation_config.json")}: eos_token_id 1000000000 is outside`);
    writeFileSync(join(d, "generation_config.json"), "{");
    expect(() => loadTokenizer(d)).toThrow(`${join(d, "generation_config.json")}: invalid JSON`);
    expect(() => tok.decode([tok.size])).toThrow(`decode: token id ${tok.size} (at position 0 of the ids) is outside the tokenizer's ids [0, ${tok.size})`);
    expect(() => tok.decode([5, -1])).toThrow(UnknownTokenIdError);
    expect(tok.decode([])).toBe("");
  });

  test("decodeKnown drops unknown ids and names them instead of throwing", () => {
    const ids = tok.encode("The quick brown fox");
    const withPad = [ids[0], tok.size + 3, ...ids.slice(1), tok.size];
    const r = tok.decodeKnown(withPad);
    expect(r.text).toBe("The quick brown fox");
    expect(r.unknown).toEqual([tok.size + 3, tok.size]);
    expect(tok.decodeKnown(ids)).toEqual({ text: "The quick brown fox", unknown: [] });
    let err: unknown = null;
    try {
      tok.decode(withPad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnknownTokenIdError);
    expect((err as UnknownTokenIdError).id).toBe(tok.size + 3);
    expect((err as UnknownTokenIdError).index).toBe(1);
  });

  test("encode never returns a missing id: a piece without one is an error naming its text offset", () => {
    // A BPE vocabulary without the byte "z" and no unk_token: the library yields a hole for it.
    const t = buildTinyTokenizer();
    const json = structuredClone(t.tokenizerJson) as { model: { vocab: Record<string, number>; merges: unknown[] } };
    delete json.model.vocab["z"];
    json.model.merges = (json.model.merges as (string | string[])[]).filter((m) => !(Array.isArray(m) ? m.join(" ") : m).includes("z"));
    const holey = tokenizerFromJson(json, t.tokenizerConfig, "/m");
    expect(holey.encode("abc")).toEqual(tok.encode("abc"));
    let err: unknown = null;
    try {
      holey.encode("the lazy dog");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnencodableTextError);
    expect((err as Error).message).toContain("/m/tokenizer.json: encode: the text at offset");
    // "the la" precedes the z: its offset is 6 whatever pieces hold it.
    expect((err as UnencodableTextError).offset).toBe(6);
  });

  test("generation_config.json's eos ids join the tokenizer's", () => {
    const d = join(tmp, "gen2");
    makeTinyModel(d);
    writeFileSync(join(d, "generation_config.json"), JSON.stringify({ eos_token_id: [tok.tokenToId(EOS), tok.tokenToId("</think>")] }));
    expect(loadTokenizer(d).eosTokenIds).toEqual([tok.tokenToId(EOS)!, tok.tokenToId("</think>")!]);
  });
});
