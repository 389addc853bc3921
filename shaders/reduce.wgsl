// Workgroup-wide reductions through workgroup memory, prepended to kernels that
// reduce; every invocation of the workgroup must call them (they hold barriers).
// reduce_portable.wgsl builds on the functions here (the default path, and
// --portable); reduce_subgroup.wgsl (--subgroups) uses only the scratch.
// `size` is the workgroup size, a power of two no larger than 256, or a smaller
// power of two when only the first `size` invocations' values count and the
// others pass the reduction's identity (0 for a sum, the lowest value for a max).

var<workgroup> reduce_scratch: array<f32, 256>;

// Adds or takes the maximum of `value` over the first `count` invocations'
// scratch slots, which must already hold their values.
fn reduce_scratch_slots(lid: u32, count: u32, is_max: bool) -> f32 {
    for (var stride = count / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            let other = reduce_scratch[lid + stride];
            if (is_max) {
                reduce_scratch[lid] = max(reduce_scratch[lid], other);
            } else {
                reduce_scratch[lid] = reduce_scratch[lid] + other;
            }
        }
        workgroupBarrier();
    }
    let result = reduce_scratch[0];
    workgroupBarrier();
    return result;
}

fn workgroup_reduce_shared(lid: u32, size: u32, value: f32, is_max: bool) -> f32 {
    reduce_scratch[lid] = value;
    workgroupBarrier();
    return reduce_scratch_slots(lid, size, is_max);
}
