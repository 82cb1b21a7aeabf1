// Answer extraction, grading and rewards: the public surface of src/grade/.
export { extractAnswer, textAfterThink, type ExtractOptions } from "./extract.ts";
export { compareAnswers, isEquivalent, parseAnswer, warmUpGrader, WORK_BUDGET, type Answer, type GradeOptions } from "./equivalence.ts";
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
