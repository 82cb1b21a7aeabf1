// The real Qwen2-family BPE in an R1-Distill-style tokenizer (tests/fixtures/r1_tokenizer.ts):
// published token ids, the chat-rendered prompt, <think>/</think>, and the padded vocabulary.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QWEN2_1_5B } from "../src/model/config.ts";
import { loadTokenizer, UnknownTokenIdError, vocabLimit } from "../src/model/tokenizer.ts";
import { R1_ADDED, writeR1Tokenizer } from "./fixtures/r1_tokenizer.ts";

const ROOT = mkdtempSync(join(tmpdir(), "siri-qwen2-tok-"));
afterAll(() => rmSync(ROOT, { recursive: true, force: true }));
writeR1Tokenizer(ROOT);
const tok = loadTokenizer(ROOT);

// Inputs and ids from llama.cpp's Qwen2 vocabulary test (models/ggml-vocab-qwen2.gguf.inp / .out),
// produced there by the Hugging Face tokenizer of Qwen2.
const PUBLISHED: [string, number[]][] = [
  ["Hello world", [9707, 1879]],
  [" Hello world", [21927, 1879]],
  ["Hello, world!", [9707, 11, 1879, 0]],
  [" this is 🦙.cpp", [419, 374, 11162, 99, 247, 13, 10821]],
  ["Führer", [37, 50753, 261]],
  ["    Hello\n    Hello", [262, 21927, 198, 262, 21927]],
  ["3333", [18, 18, 18, 18]],
  ["\n =", [198, 284]],
  ["Hello, y'all! How are you 😁 ?我想在apple工作1314151天～", [9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100, 18493, 22377, 99257, 16, 18, 16, 19, 16, 20, 16, 35727, 21216]],
];

describe("R1-Distill tokenizer on the Qwen2 BPE", () => {
  test("151,665 ids: 151,643 BPE tokens and R1's 22 added tokens; bos / eos as R1-Distill ships them", () => {
    expect(tok.size).toBe(151665);
    for (const [id, content, special] of R1_ADDED) {
      expect(tok.tokenToId(content)).toBe(id);
      expect(tok.specialTokens.get(content)).toBe(special ? id : undefined);
    }
    expect(tok.bosTokenId).toBe(151646);
    expect(tok.eosTokenIds).toEqual([151643]);
    expect(tok.tokenToId("<think>")).toBe(151648);
    expect(tok.tokenToId("</think>")).toBe(151649);
  });

  for (const [text, ids] of PUBLISHED) {
    test(`published Qwen2 ids: ${JSON.stringify(text)}`, () => {
      expect(tok.encode(text)).toEqual(ids);
      expect(tok.decode(ids)).toBe(text);
    });
  }

  test("the chat-rendered prompt: <｜begin▁of▁sentence｜><｜User｜>…<｜Assistant｜><think>\\n", () => {
    const prompt = tok.applyChatTemplate([{ role: "user", content: "Hello world" }], { addGenerationPrompt: true });
    expect(tok.encode(prompt)).toEqual([151646, 151644, 9707, 1879, 151645, 151648, 198]);
    const answer = tok.encode("<think>\nx</think>\n\n\\boxed{2}");
    expect(answer[0]).toBe(151648);
    expect(answer).toContain(151649);
    expect(tok.decode([...answer, 151643], { skipSpecialTokens: true })).toBe("<think>\nx</think>\n\n\\boxed{2}");
  });

  test("padded vocabulary: the 1.5B config's 151936 rows over 151,665 ids; an id above is a named condition", () => {
    expect(vocabLimit(QWEN2_1_5B.vocabSize, tok)).toBe(151665);
    expect(() => tok.decode([9707, 151868])).toThrow(UnknownTokenIdError);
    expect(() => tok.decode([151868])).toThrow("token id 151868 (at position 0 of the ids) is outside the tokenizer's ids [0, 151665)");
    expect(tok.decodeKnown([9707, 151868, 1879, 151665])).toEqual({ text: "Hello world", unknown: [151868, 151665] });
  });
});
