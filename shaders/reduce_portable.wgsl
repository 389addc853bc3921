// Workgroup reductions without subgroup operations (see reduce.wgsl).

fn workgroup_sum(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_shared(lid, size, value, false);
}

fn workgroup_max(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_shared(lid, size, value, true);
}

// Without subgroups each invocation is a "subgroup" of one (see reduce_subgroup.wgsl).
fn subgroup_sum(value: f32) -> f32 {
    return value;
}

fn subgroup_lanes() -> u32 {
    return 1u;
}

fn subgroup_first(lid: u32) -> u32 {
    return lid;
}
