// Greedy sampling on the GPU: token[0] = the index of the largest logit (the
// first one on ties, as torch.argmax), so a step reads back 4 bytes.
//
// Dispatch: one workgroup of 256 threads.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // [vocab]
@group(0) @binding(2) var<storage, read_write> token: array<u32>;   // [1]

const WG: u32 = 256u;
var<workgroup> best_value: array<f32, 256>;
var<workgroup> best_index: array<u32, 256>;

@compute @workgroup_size(256)
fn argmax(@builtin(local_invocation_index) lid: u32) {
    var value = -3.4e38;
    var index = 0xffffffffu;
    for (var i = lid; i < p.n; i = i + WG) {
        if (logits[i] > value || index == 0xffffffffu) {
            value = logits[i];
            index = i;
        }
    }
    best_value[lid] = value;
    best_index[lid] = index;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let v = best_value[lid + stride];
            let j = best_index[lid + stride];
            if (v > best_value[lid] || (v == best_value[lid] && j < best_index[lid])) {
                best_value[lid] = v;
                best_index[lid] = j;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        token[0] = best_index[0];
    }
}
