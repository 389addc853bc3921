// Workgroup reductions without subgroup operations (see reduce.wgsl).

fn workgroup_sum(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_shared(lid, size, value, false);
}

fn workgroup_max(lid: u32, size: u32, value: f32) -> f32 {
    return workgroup_reduce_shared(lid, size, value, true);
}
