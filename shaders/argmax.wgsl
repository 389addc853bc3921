// Greedy sampling on the GPU: token[0] = the index of the largest logit (the
// first one on ties, as torch.argmax), so a step reads back 4 bytes.
//
// Two passes, because one workgroup walking a 152k-entry vocabulary alone took
// longer than the LM head's GEMV: `argmax_parts` gives each of p.parts
// workgroups a slice of the logits and writes the slice's best (value bits,
// index) after the logits; `argmax` reduces those pairs. Ties go to the lower
// index at every step. The logits are viewed as u32 bits (values compare as
// f32), so that the pairs' indices never pass through float registers.
//
// Layout: logits [n] f32 bits, then [parts] (value bits, index) pairs.
// Dispatch: argmax_parts [parts] workgroups, then argmax 1 workgroup, of 256.

struct Params {
    n: u32,     // logits
    parts: u32, // workgroups of the first pass (at most 256)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<u32>; // [n] f32 bits, then [parts, 2]
@group(0) @binding(2) var<storage, read_write> token: array<u32>;  // [1]

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu; // no index yet
var<workgroup> best_value: array<f32, 256>;
var<workgroup> best_index: array<u32, 256>;

// Whether (v, i) beats (bv, bi): larger, or equal with the lower index; NONE never wins.
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return i != NONE && (bi == NONE || v > bv || (v == bv && i < bi));
}

// Reduces the workgroup's candidates into slot 0.
fn reduce_best(lid: u32, value: f32, index: u32) {
    best_value[lid] = value;
    best_index[lid] = index;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let v = best_value[lid + stride];
            let j = best_index[lid + stride];
            if (beats(v, j, best_value[lid], best_index[lid])) {
                best_value[lid] = v;
                best_index[lid] = j;
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn argmax_parts(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = (p.n + p.parts - 1u) / p.parts;
    let end = min((wg.x + 1u) * chunk, p.n);
    var value = -3.4e38;
    var index = NONE;
    // Each thread sees its indices in increasing order, so strict > keeps the first.
    for (var i = wg.x * chunk + lid; i < end; i = i + WG) {
        let v = bitcast<f32>(logits[i]);
        if (v > value || index == NONE) {
            value = v;
            index = i;
        }
    }
    reduce_best(lid, value, index);
    if (lid == 0u) {
        logits[p.n + 2u * wg.x] = bitcast<u32>(best_value[0]);
        logits[p.n + 2u * wg.x + 1u] = best_index[0];
    }
}

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) lid: u32) {
    var value = -3.4e38;
    var index = NONE;
    if (lid < p.parts) {
        value = bitcast<f32>(logits[p.n + 2u * lid]);
        index = logits[p.n + 2u * lid + 1u];
    }
    reduce_best(lid, value, index);
    if (lid == 0u) {
        token[0] = best_index[0];
    }
}
