// Answer extraction, grading and rewards: the public surface of src/grade/.
export { extractAnswer, textAfterThink, type ExtractOptions } from "./extract.ts";
export { compareAnswers, isEquivalent, warmUpGrader, WORK_BUDGET, type GradeOptions } from "./equivalence.ts";
export { parseAnswer, type Answer } from "./structure.ts";
export { normalizeAnswer } from "./normalize.ts";
export {
  lengthCappedReward,
  overlongPenalty,
  gradeResponse,
  type RewardOptions,
  type RewardInput,
  type RewardResult,
  type GradeResult,
} from "./reward.ts";
