/**
 * Problems from a dataset (DeepScaleR for the paper's run): the prompt is
 * DeepScaleR's instruction in the model's chat template; the reward is
 * SIRI's length-capped one (a closed `</think>` followed by a correct last
 * `\boxed{}`). The last `holdOut` problems are kept for validation.
 */
import type { Problem } from "../data/load.ts";
import { DEEPSCALER_INSTRUCTION, renderPrompt } from "../data/prompt.ts";
import type { LoadedTokenizer } from "../model/tokenizer.ts";
import { seededUniform } from "../util/random.ts";
import { capReward, type Task } from "./task.ts";

export function datasetTask(tokenizer: LoadedTokenizer, name: string, problems: Problem[], holdOut: number): Task {
  if (!tokenizer.chatTemplate) throw new Error(`task ${name}: the model's tokenizer_config.json has no chat_template`);
  if (problems.length <= holdOut) throw new Error(`task ${name}: ${problems.length} problems leave none for training after holding out ${holdOut} for validation`);
  const train = problems.slice(0, problems.length - holdOut);
  const val = problems.slice(problems.length - holdOut);
  const special = { bos_token: tokenizer.bosToken, eos_token: tokenizer.eosToken, pad_token: tokenizer.padToken };
  return {
    name,
    sample: (n, seed) => {
      const rand = seededUniform(seed);
      return Array.from({ length: n }, () => train[Math.floor(rand() * train.length)]);
    },
    validation: (n) => val.slice(0, n),
    prompt: (p) => renderPrompt(p.problem, tokenizer.chatTemplate!, special, { instruction: DEEPSCALER_INSTRUCTION }),
    reward: (r, gold, cap) => capReward(tokenizer, r, gold, cap),
  };
}
