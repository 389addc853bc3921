// Workgroup reductions with subgroup operations (needs the `subgroups` feature):
// each subgroup reduces in registers, then one value per subgroup goes through
// workgroup memory, and every invocation adds up those few slots itself. Assumes,
// as every implementation does, that a 1-D workgroup's subgroups hold
// consecutive invocation indices.

// Combines the subgroups' results (`partial`, this invocation's subgroup's):
// two barriers, whatever the workgroup size.
fn workgroup_reduce_partials(lid: u32, size: u32, partial: f32, is_max: bool) -> f32 {
    let lanes = subgroup_lanes();
    let first = subgroup_first(lid);
    if (lid == first) {
        reduce_scratch[first / lanes] = partial;
    }
    workgroupBarrier();
    var result = reduce_scratch[0];
    for (var i = 1u; i < max(size / lanes, 1u); i = i + 1u) {
        let other = reduce_scratch[i];
        result = select(result + other, max(result, other), is_max);
    }
    workgroupBarrier(); // every invocation has read the slots before they are reused
    return result;
}

fn workgroup_sum(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_partials(lid, size, subgroupAdd(value), false);
}

fn workgroup_max(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_partials(lid, size, subgroupMax(value), true);
}

// The first step of a reduction a kernel finishes itself (gemv.wgsl): the sum over
// this invocation's subgroup (subgroup_sum), the subgroup's size (subgroup_lanes,
// counted with one ballot rather than a reduction of ones), and its first
// invocation (subgroup_first).
fn subgroup_sum(value: f32) -> f32 {
    return subgroupAdd(value);
}

fn subgroup_lanes() -> u32 {
    let votes = subgroupBallot(true);
    return countOneBits(votes.x) + countOneBits(votes.y) + countOneBits(votes.z) + countOneBits(votes.w);
}

fn subgroup_first(lid: u32) -> u32 {
    return subgroupBroadcastFirst(lid);
}
