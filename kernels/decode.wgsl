// Decoding on the GPU: after the sampler has drawn one token per running row,
// `advance` appends it to the row's output window, checks the row's stop
// tokens and budget, and feeds the token to the next decode step (the next
// forward's input token, position and random-stream index), so several
// decode steps run back to back without the CPU. A row that stops is frozen:
// it keeps its last input (rewriting its own last cache position with the
// same values) and appends nothing, until the CPU retires it.
//
// Per row i (CPU reference: advanceRef in src/kernels/decode.ts):
//   if done: nothing
//   out[i, s] = (token, bitcast(logp)); n += 1
//   if token is one of the row's stop ids or n >= budget: done = 1
//   else: tokens[i] = token, pos[i] += 1, streams[i].index = n

struct Params {
  R: u32,         // rows
  K: u32,         // steps per window (out holds K entries per row)
  s: u32,         // this step's index in the window
  out_base: u32,  // u32 index in `dec` where the output window starts
}

const MAX_STOP: u32 = {{MAX_STOP}}u;
const STATE: u32 = 4u + MAX_STOP; // u32s of one row's state

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> sampled: array<u32>;      // [R] the sampler's tokens
@group(0) @binding(2) var<storage, read> sampled_lp: array<f32>;   // [R] and their log-probs
@group(0) @binding(3) var<storage, read_write> tokens: array<u32>; // [R] next forward's input ids
@group(0) @binding(4) var<storage, read_write> pos: array<u32>;    // [R] next forward's positions
@group(0) @binding(5) var<storage, read_write> streams: array<u32>; // [R, 2] (request key, token index)
// [R, STATE] state (n generated, done, budget, stop count, stop ids...), then
// at out_base the window [R, K, 2] (token, log-prob bits).
@group(0) @binding(6) var<storage, read_write> dec: array<u32>;

@compute @workgroup_size({{WG}})
fn advance(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= P.R) { return; }
  let st = i * STATE;
  if (dec[st + 1u] != 0u) { return; }
  let tok = sampled[i];
  let o = P.out_base + (i * P.K + P.s) * 2u;
  dec[o] = tok;
  dec[o + 1u] = bitcast<u32>(sampled_lp[i]);
  let n = dec[st] + 1u;
  dec[st] = n;
  var stop = n >= dec[st + 2u];
  let ns = min(dec[st + 3u], MAX_STOP);
  for (var j = 0u; j < ns; j++) {
    if (dec[st + 4u + j] == tok) { stop = true; }
  }
  if (stop) {
    dec[st + 1u] = 1u;
    return;
  }
  tokens[i] = tok;
  pos[i] = pos[i] + 1u;
  streams[2u * i + 1u] = n;
}
