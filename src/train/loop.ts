/**
 * The SIRI loop, read top to bottom, one iteration per step:
 *
 *   cap L(t) → prompts → G rollouts each (capped at L(t)) → length-capped rewards
 *   → [DAPO: soft overlong punishment, dynamic sampling, overlong filter]
 *   → group advantages → policy update (GRPO + clip-higher, no KL)
 *   → rollout model sync → metrics → checkpoints (every N, trough, peak)
 *
 * Kept from GRPO/DAPO: group-relative advantages with std normalisation,
 * clip-higher (0.2 / 0.28), token-mean loss aggregation. Dropped: the KL
 * term and the reference model (SIRI and DAPO train without them). DAPO's
 * sample-level options are each a named config switch, off by default.
 *
 * Exact resume: every random choice of step t (the prompts drawn, the
 * rollouts' sampling seed, the mini-batch shuffle) is a function of
 * (seed, t) only, and a completion depends only on its request and that seed
 * (src/engine/generate.ts), so a run resumed from the checkpoint after step t
 * draws exactly what an uninterrupted run would, and the weights match bit
 * for bit.
 *
 * Bounded staleness (dist.staleness k > 0, rollouts from workers over a
 * broker): since a step's first round depends only on (seed, step), the
 * first rounds of steps t+1..t+k are requested before step t's update, and
 * the workers generate them while the learner trains; the policy ratio then
 * takes the behaviour policy's log-probs (policy.oldLogp "auto"). Which
 * weights produced a completion depends on timing, so such a run is not
 * reproducible bit for bit, nor is a resumed one (its first step is
 * generated on-policy).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { progressBar } from "../bench/progress.ts";
import { GpuDeviceLostError, yieldToEventLoop, type Gpu } from "../gpu/index.ts";
import { lrAt } from "../kernels/adamw.ts";
import { vocabLimit } from "../model/tokenizer.ts";
import { groupAdvantages } from "../rl/advantages.ts";
import { dynamicSample, overlongFilterWeights } from "../rl/dapo.ts";
import { capAt, cycleAt, phaseAt } from "../rl/schedule.ts";
import { withRunLock } from "../run/lock.ts";
import { watchInterrupts, type InterruptWatch } from "../run/signals.ts";
import type { TaskProblem } from "../tasks/task.ts";
import { stepSeed } from "../util/random.ts";
import { median } from "../util/stats.ts";
import { openWeights, runDiskPlan } from "./checkpoint.ts";
import { oldLogpOf, type TrainConfig } from "./config.ts";
import { DivergenceGuard } from "./divergence.ts";
import { openTensorBoard } from "./tfevents.ts";
import { appendJsonl, cycleTable, EVALS_FILE, METRICS_FILE, metricsSvg, readEvals, readMetrics, type EvalRecord, type StepMetrics } from "./metrics.ts";
import { TrainModel } from "./model.ts";
import { Optimizer } from "./optim.ts";
import { formatPlan, trainingMemoryPlan } from "./plan.ts";
import { emptyRolloutStats, rolloutOccupancy, Rollouts, scoreGroups, type Group, type RolloutSource } from "./rollouts.ts";
import { baseModel, CheckpointPolicy, findStart, restoreRun, taskFor } from "./run_state.ts";
import { policyStepMetrics, policyUpdate, skippedUpdate, type Rollout } from "./step.ts";
import { validator } from "./validation.ts";
import { runWarmStart } from "./warm_start.ts";

export interface TrainHooks {
  /** Change a step's rewards before anything uses them (tests: inject NaN, force equal groups). */
  rewards?: (step: number, round: number, group: number, rewards: number[], lengths: number[]) => number[];
  /** Change a step's advantages before the update (tests: a non-finite loss). */
  advantages?: (step: number, adv: Float32Array) => Float32Array;
  /** See the rollouts that go into the update. */
  rollouts?: (step: number, rollouts: Rollout[], cap: number) => void;
  /** Act as if Ctrl-C came during this step (0-based). */
  stopAtStep?: number;
  /** Act as if Ctrl-C came during this warm-start step (1-based: after it). */
  stopAtWarmStep?: number;
  /** Progress bar on stderr (default true). */
  progress?: boolean;
}

export interface TrainResult {
  stepsDone: number;
  stopped: "done" | "interrupted";
  lastCheckpoint: string | null;
  metrics: StepMetrics[];
  evals: EvalRecord[];
  table: string;
}

type TrainOptions = {
  resume?: boolean;
  hooks?: TrainHooks;
  log?: (s: string) => void;
  /** Where rollouts come from (default: this process's engine); `configJson` is the model's config.json. src/dist/learner.ts: workers over a broker. */
  rolloutSource?: (local: Rollouts, configJson: string) => Promise<RolloutSource>;
};

/**
 * A run, holding its folder's lock (one writer per run folder) after clearing
 * dead writers' temporaries, with Ctrl-C watched from the start (src/run/).
 */
export async function train(gpu: Gpu, cfg: TrainConfig, o: TrainOptions = {}): Promise<TrainResult> {
  const log = o.log ?? ((s: string) => console.log(s));
  return withRunLock(
    cfg.out,
    "siri train",
    async () => {
      const stop = watchInterrupts({ log });
      try {
        return await trainInFolder(gpu, cfg, o, stop);
      } finally {
        stop.dispose();
      }
    },
    log,
  );
}

async function trainInFolder(gpu: Gpu, cfg: TrainConfig, o: TrainOptions, stop: InterruptWatch): Promise<TrainResult> {
  const log = o.log ?? ((s: string) => console.log(s));
  const hooks = o.hooks ?? {};
  const staleness = cfg.dist.staleness;
  const { dir: baseDir, tokenizer } = baseModel(cfg);
  const task = await taskFor(cfg, tokenizer);
  const from = findStart(cfg, o.resume ?? false, log);
  // Weights go to the GPU one tensor at a time (no CPU copy of the model is kept).
  const base = openWeights(from ?? baseDir);
  // The sampler and the trainer's log-probs both see only the ids the tokenizer has (padded vocabulary).
  const limit = vocabLimit(base.config.vocabSize, tokenizer);
  const model = await TrainModel.create(gpu, base.config, (n) => base.reader.readF32(n), { vocabLimit: limit, precision: cfg.precision, lossScale: cfg.lossScale }).finally(() => base.reader.close());
  model.reserve(cfg.policy.microBatchTokens); // activations sized once, as in the memory plan
  const opt = await Optimizer.create(gpu, model.params, cfg.optim);
  const start = restoreRun(cfg, from, opt, model.params.map((p) => p.name), log, model.scaler);
  let { startStep, nonFinite } = start;
  const tb = cfg.tensorboard ? openTensorBoard(cfg.out) : null; // rebuilt from metrics.jsonl/evals.jsonl as restored
  const rollouts = await Rollouts.create(gpu, model, cfg, task, tokenizer, task.sample(cfg.promptsPerStep, stepSeed(cfg.seed, startStep, 100)));
  log(formatPlan(trainingMemoryPlan(model.config, cfg, rollouts.roll.model.dtype), `memory plan (${cfg.preset}, ${base.config.numLayers} layers, hidden ${base.config.hiddenSize}, vocab ${base.config.vocabSize}):`));
  log(formatPlan(runDiskPlan(model.config, cfg, baseDir), `disk plan (checkpoints under ${join(cfg.out, "checkpoints")}):`));
  let source: RolloutSource = rollouts;
  try {
    if (o.rolloutSource) source = await o.rolloutSource(rollouts, join(baseDir, "config.json"));
    if (staleness > 0 && !source.prefetch) throw new Error(`dist.staleness (--staleness) is ${staleness}, but rollouts are generated in this process, where generation and update share one GPU and nothing can overlap; use it with --broker and rollout workers, or set it to 0`);
  } catch (e) {
    if (source !== rollouts) await source.destroy();
    rollouts.destroy();
    throw e;
  }
  const prompt = (p: TaskProblem) => task.prompt(p);
  const { temperature, topP, topK } = cfg.rollout;
  /** Round r of step s: its key, prompts, cap and sampling stream, a function of (seed, s, r) only, so a round prefetched steps ahead is the very round the step asks for. */
  const roundAt = (s: number, r: number, missing: number) => ({
    key: `${s}.${r}`,
    problems: task.sample(r === 0 ? cfg.promptsPerStep : Math.max(missing, 1), stepSeed(cfg.seed, s, 100 + r)),
    cap: capAt(cfg.schedule, s),
    sampling: { temperature, topP, topK, seed: stepSeed(cfg.seed, s, 200 + r) },
  });
  const checkpoints = new CheckpointPolicy(cfg, model, opt, baseDir, from);
  const validate = validator(cfg, task, tokenizer, rollouts.engine, rollouts.stop, log);
  const validating = cfg.validation.every > 0 || cfg.task.kind === "arith";
  stop.whereSaved = () => (checkpoints.last ? `the last checkpoint is ${checkpoints.last}` : "no checkpoint yet");
  let guard: DivergenceGuard | null = null; // made when RL starts: the weight norm then is its reference
  let stepsDone = startStep;
  let stopped: TrainResult["stopped"] = "done";
  try {
    // ---- supervised warm start (once, before RL step 0; a run resumed from a checkpoint taken inside it continues it)
    const fresh = !from || start.warm !== null;
    if (startStep === 0 && fresh && cfg.warmStart.steps > 0) {
      if (await runWarmStart(gpu, model, cfg, task, start.warm, checkpoints, stop, { nonFinite, hooks, log })) stopped = "interrupted";
      await source.sync();
    }
    guard = await DivergenceGuard.create(gpu, model.params, start.weightNormRef);
    checkpoints.weightNormRef = guard.reference;
    // A resumed step-0 checkpoint already holds its start validation and weights: neither is redone.
    if (startStep === 0 && fresh && stopped !== "interrupted") {
      const bad = await guard.check(NaN);
      if (bad) throw new Error(`the weights RL would start from failed the divergence check: ${bad.message}; nothing was saved`);
      if (validating) await validate("start", 0);
      await checkpoints.saveStep(0, nonFinite);
    }
    if (stop.requested && stopped !== "interrupted") {
      stopped = "interrupted"; // Ctrl-C while loading or validating: stop before the first RL step
      log(`stopped before RL step ${startStep}; checkpoint ${checkpoints.last}; continue with --resume`);
    }

    const bar = hooks.progress === false ? null : progressBar("SIRI", cfg.steps, startStep, { unit: "steps" });
    for (let step = startStep; step < cfg.steps && stopped !== "interrupted"; step++) {
      const t0 = performance.now();
      // ---- L(t)
      const cap = capAt(cfg.schedule, step);
      const gen = emptyRolloutStats(rollouts.engine.opts.maxBatch);
      const round = async (r: number, missing: number): Promise<Group[]> => {
        // ---- this round's prompts, G rollouts each through the batched, paged KV cache (or the round prefetched for it)
        const x = roundAt(step, r, missing);
        const groups = await source.generate(x.problems, prompt, cfg.groupSize, x.cap, x.sampling, gen, x.key);
        // ---- length-capped reward (a cut response has no answer and scores 0) [+ DAPO soft overlong punishment]
        return scoreGroups(groups, task, cap, cfg.dapo, hooks.rewards && ((i, rw, len) => hooks.rewards!(step, r, i, rw, len)));
      };
      // ---- DAPO dynamic sampling: keep only groups with unequal rewards, sample more until the batch is full
      let groups: Group[];
      let dropped = 0;
      let rounds = 1;
      if (cfg.dapo.dynamicSampling) {
        const ds = await dynamicSample(round, { batchGroups: cfg.promptsPerStep, maxRounds: cfg.dapo.maxRounds, rewardsOf: (g) => g.rewards.map((r) => (Number.isFinite(r) ? r : 0)) });
        ({ groups, dropped, rounds } = ds);
        if (!ds.full) log(`step ${step}: dynamic sampling kept ${groups.length} of ${cfg.promptsPerStep} groups after ${rounds} rounds; training on those`);
      } else groups = await round(0, cfg.promptsPerStep);

      // ---- group advantages (+ DAPO overlong filter as per-response weights)
      const rewards = groups.flatMap((g) => g.rewards);
      const lengths = groups.flatMap((g) => g.responses.map((r) => r.length));
      const truncated = groups.flatMap((g) => g.finished.map((f) => !f));
      const correct = groups.flatMap((g) => g.correct);
      const finiteRewards = rewards.every((r) => Number.isFinite(r));
      let adv = finiteRewards && groups.length ? groupAdvantages(rewards, groups.map((g) => g.responses.length), { normalizeStd: cfg.normalizeAdvantages }) : new Float32Array(rewards.length).fill(NaN);
      if (hooks.advantages) adv = hooks.advantages(step, adv);
      const weights = cfg.dapo.overlongFilter ? overlongFilterWeights(truncated) : new Float32Array(rewards.length).fill(1);
      const batch: Rollout[] = groups.flatMap((g) => g.responses.map((response, k) => ({ prompt: g.prompt, response, rolloutLogp: g.logprobs[k], advantage: 0 })));
      batch.forEach((r, i) => Object.assign(r, { advantage: adv[i], weight: weights[i] }));
      hooks.rollouts?.(step, batch, cap);

      // ---- bounded staleness: the next k steps' first rounds go out now, and workers generate them with the weights they hold while this update runs (not past the last step, nor after a Ctrl-C)
      if (staleness > 0 && !stop.requested) {
        for (let s = step + 1; s <= Math.min(step + staleness, cfg.steps - 1); s++) {
          const x = roundAt(s, 0, cfg.promptsPerStep);
          await source.prefetch!(x.key, s - step, x.problems, prompt, cfg.groupSize, x.cap, x.sampling);
        }
      }

      // ---- policy update (GRPO + clip-higher; old log-probs from a forward of the trainer before the first update, or the rollouts' own: PolicyConfig.oldLogp); a non-finite loss or gradient skips it
      let stats = skippedUpdate();
      if (!finiteRewards) log(`step ${step}: non-finite reward (${rewards.find((r) => !Number.isFinite(r))}); update skipped`);
      else if (batch.length) stats = await policyUpdate(model, opt, batch, { ...cfg.policy, oldLogp: oldLogpOf(cfg), temperature: cfg.rollout.temperature }, stepSeed(cfg.seed, step, 300) % 1_000_000);
      const bad = !finiteRewards || !Number.isFinite(stats.loss) || stats.skipped > 0;
      const worstGrad = stats.gradNormMax ?? stats.gradNorm;
      if (bad && finiteRewards) log(`step ${step}: loss ${stats.loss}, worst gradient norm ${worstGrad}; ${stats.skipped} of ${stats.updates} update(s) skipped for a non-finite loss or gradient (${nonFinite + 1} in a row)`);
      nonFinite = bad ? nonFinite + 1 : 0;
      // ---- divergence guard: checked before anything can save these weights
      const diverged = await guard.check(worstGrad);
      if (diverged) {
        throw new Error(
          `stopping at step ${step}: diverged: ${diverged.message}. Nothing was saved from these weights; the last good ones are in ${checkpoints.last ?? "(none)"}; lower optim.lr (or warm up longer) and start again`,
        );
      }
      // ---- the rollout model follows the trainer's weights
      await source.sync();

      // ---- metrics
      const mean = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / Math.max(xs.length, 1);
      const m: StepMetrics = {
        step,
        cycle: cycleAt(cfg.schedule, step),
        phase: phaseAt(cfg.schedule, step),
        cap,
        reward_mean: mean(rewards),
        accuracy: correct.filter(Boolean).length / Math.max(correct.length, 1),
        length_mean: mean(lengths),
        length_max: Math.max(0, ...lengths),
        length_median: lengths.length ? median(lengths) : 0,
        truncation_rate: truncated.filter(Boolean).length / Math.max(truncated.length, 1),
        clip_frac_low: stats.clipFracLow,
        clip_frac_high: stats.clipFracHigh,
        ...policyStepMetrics(stats),
        entropy: stats.entropy,
        grad_norm: stats.gradNorm,
        approx_kl: stats.approxKl,
        loss: stats.loss,
        lr: lrAt(Math.max(opt.step, 1), { lr: cfg.optim.lr, warmupSteps: cfg.optim.warmupSteps }),
        rollouts: batch.length,
        groups_dropped: dropped,
        rounds,
        rollout_tokens: gen.tokens,
        rollout_tokens_per_s: gen.seconds > 0 ? gen.tokens / gen.seconds : 0,
        decode_occupancy: rolloutOccupancy(gen),
        readbacks_per_token: gen.tokens ? gen.readbacks / gen.tokens : 0,
        rollout_version_lag_mean: gen.completions ? gen.versionLagSum / gen.completions : 0,
        rollout_version_lag_max: gen.versionLagMax,
        step_time_s: (performance.now() - t0) / 1000,
        skipped: bad,
        non_finite: nonFinite,
      };
      appendJsonl(join(cfg.out, METRICS_FILE), m);
      stepsDone = step + 1;
      bar?.tick(1, `cap ${cap} len ${m.length_mean.toFixed(1)} acc ${(m.accuracy * 100).toFixed(0)}%`);
      if (nonFinite >= cfg.maxNonFinite) {
        await checkpoints.saveStep(stepsDone, nonFinite);
        throw new Error(`stopping: ${nonFinite} non-finite losses in a row (maxNonFinite = ${cfg.maxNonFinite}); the last good weights are in ${checkpoints.last} (updates with non-finite losses were skipped); lower optim.lr or check the rewards`);
      }

      // ---- checkpoints: SIRI-low at each trough, SIRI-high at each peak, every N steps, at the end, on Ctrl-C
      if (hooks.stopAtStep === step) stop.request();
      const extremes = checkpoints.extremes(stepsDone);
      for (const name of extremes) {
        await validate(name, stepsDone);
        await checkpoints.save(name, stepsDone, nonFinite);
      }
      if (cfg.validation.every > 0 && stepsDone % cfg.validation.every === 0 && !extremes.length && stepsDone < cfg.steps) await validate(`step-${String(stepsDone).padStart(6, "0")}`, stepsDone);
      if (checkpoints.stepDue(stepsDone, stop.requested)) await checkpoints.saveStep(stepsDone, nonFinite);
      tb?.sync();
      if (stop.requested) {
        stopped = "interrupted";
        log(`stopped after step ${stepsDone} of ${cfg.steps}; checkpoint ${checkpoints.last}; continue with --resume`);
        break;
      }
      await yieldToEventLoop(0); // let a Ctrl-C handler run between steps
    }
    bar?.done();
    if (stopped === "done" && validating && !checkpoints.extremes(cfg.steps).length) await validate("final", stepsDone);
    tb?.sync();
  } catch (e) {
    if (e instanceof GpuDeviceLostError) throw new Error(`GPU device lost after ${stepsDone} steps (${e.message}); the last checkpoint ${checkpoints.last ?? "(none)"} is intact; continue with --resume`);
    throw e;
  } finally {
    guard?.destroy();
    if (source !== rollouts) await source.destroy(); // prefetched rounds of steps never reached are discarded
    rollouts.destroy();
    opt.destroy();
    model.destroy();
  }

  // ---- the plot and the per-cycle table
  const metrics = readMetrics(join(cfg.out, METRICS_FILE));
  const evals = readEvals(join(cfg.out, EVALS_FILE));
  writeFileSync(join(cfg.out, "plot.svg"), metricsSvg(metrics, evals, `SIRI ${cfg.preset}: cap, mean length, accuracy`));
  const table = cycleTable(metrics, evals);
  writeFileSync(join(cfg.out, "cycles.md"), table);
  return { stepsDone, stopped, lastCheckpoint: checkpoints.last, metrics, evals, table };
}
