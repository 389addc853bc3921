//! `adapters`: the GPUs wgpu can see, with what matters for running models.

use anyhow::Result;

use super::inspect::human;
use crate::gpu::context::list_adapters;

pub fn run() -> Result<()> {
    let adapters = pollster::block_on(list_adapters());
    if adapters.is_empty() {
        anyhow::bail!(
            "no GPU adapter found. On Linux without a GPU, install Mesa's software Vulkan driver \
             (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)"
        );
    }
    for a in adapters {
        println!("{}: {} ({}, {})", a.index, a.name, a.backend, a.device_type);
        println!("   driver       {}", a.driver);
        println!(
            "   max binding  {}   max buffer {}   workgroup memory {}",
            human(a.max_binding_bytes),
            human(a.max_buffer_bytes),
            human(a.workgroup_bytes.into())
        );
        println!("   shader-f16   {}   subgroups {}", a.shader_f16, a.subgroups);
        match &a.coop_gemm_lack {
            None => println!("   tensor-core prefill (--gemm coop) yes"),
            Some(lack) => println!("   tensor-core prefill (--gemm coop) no: {lack}"),
        }
    }
    println!("\nPick one with --adapter INDEX or --adapter NAME.");
    Ok(())
}
