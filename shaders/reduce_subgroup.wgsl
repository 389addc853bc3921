// Workgroup reductions with subgroup operations (needs the `subgroups` feature):
// each subgroup reduces in registers, then one value per subgroup goes through
// workgroup memory. Assumes, as every implementation does, that a 1-D
// workgroup's subgroups hold consecutive invocation indices.

fn workgroup_reduce_subgroup(lid: u32, size: u32, value: f32, is_max: bool) -> f32 {
    // Both reductions run so the subgroup operations stay in uniform control flow.
    let partial = select(subgroupAdd(value), subgroupMax(value), is_max);
    let lanes = subgroupAdd(1u);
    let first = subgroupBroadcastFirst(lid);
    if (lid == first) {
        reduce_scratch[first / lanes] = partial;
    }
    workgroupBarrier();
    let subgroups = max(size / lanes, 1u);
    if (lid >= subgroups && lid < size) {
        reduce_scratch[lid] = select(0.0, -3.0e38, is_max);
    }
    workgroupBarrier();
    // Round the slot count up to a power of two for the tree.
    var count = 1u;
    while (count < subgroups) {
        count = count * 2u;
    }
    return reduce_scratch_slots(lid, count, is_max);
}

fn workgroup_sum(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_subgroup(lid, size, value, false);
}

fn workgroup_max(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_subgroup(lid, size, value, true);
}

// The first step of a reduction a kernel finishes itself (gemv.wgsl): the sum over
// this invocation's subgroup, the subgroup's size, and its first invocation.
fn subgroup_sum(value: f32) -> f32 {
    return subgroupAdd(value);
}

fn subgroup_lanes() -> u32 {
    return subgroupAdd(1u);
}

fn subgroup_first(lid: u32) -> u32 {
    return subgroupBroadcastFirst(lid);
}
