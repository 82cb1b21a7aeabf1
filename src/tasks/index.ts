// Training tasks (leaves): problems with checkable answers, their prompts,
// the reward (src/grade/ through task.ts), and warm-start examples as data.
// The default run trains on the synthetic arithmetic task; the paper's run on
// a dataset (DeepScaleR) through dataset.ts.
export { capReward, THINK_REWARD, type Example, type Response, type Task, type TaskProblem } from "./task.ts";
export { datasetTask } from "./dataset.ts";
export {
  ARITH_KINDS,
  COMPRESSED_STYLE,
  DEFAULT_MIX,
  FULL_STYLE,
  SHORT_INSTRUCTION,
  arithTask,
  encodeExample,
  enumerateProblems,
  isHeldOut,
  makeProblems,
  promptText,
  sampleStyle,
  solve,
  verboseTrace,
  warmStartBatches,
  type ArithKind,
  type ArithOptions,
  type ArithProblem,
  type StyleMix,
  type TraceStyle,
} from "./arith.ts";
