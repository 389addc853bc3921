// Memory-bandwidth roof: every thread streams 16-byte words of a large buffer
// (grid-stride loop) and folds them into one value per workgroup, so the reads
// cannot be optimized away. Bytes read per second is the best any
// weight-streaming kernel on this device can hope for.
//
// Dispatch: `workgroups` x 1 x 1 workgroups of 256 threads.

struct Params {
    words: u32,   // vec4<u32> words in `data`
    threads: u32, // total threads dispatched
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> data: array<vec4<u32>>;   // [words]
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;   // [workgroups]

var<workgroup> folded: array<u32, 256>;

@compute @workgroup_size(256)
fn stream_read(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    var acc = vec4<u32>(0u);
    for (var i = id.x; i < p.words; i = i + p.threads) {
        acc = acc ^ data[i];
    }
    folded[lid] = acc.x ^ acc.y ^ acc.z ^ acc.w;
    workgroupBarrier();
    if (lid == 0u) {
        var all = 0u;
        for (var j = 0u; j < 256u; j = j + 1u) {
            all = all ^ folded[j];
        }
        sink[wg.x] = all;
    }
}
