//! The GPU device: adapter choice, limits, optional features, and the few
//! device-level helpers everything else uses (waiting for work and reading a
//! buffer back, both async as WebGPU is, and catching validation errors as
//! `Result`s instead of panics).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::GpuError;

/// How long one wait for the GPU may take before it counts as hung. Software
/// drivers compile shaders at the first dispatch, which takes seconds there.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(120);

/// What the chosen adapter can do, read once and used to pick kernel variants.
#[derive(Debug, Clone)]
pub struct GpuCaps {
    pub limits: wgpu::Limits,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    /// GPU timestamps between dispatches (`bench --profile`).
    pub timestamps: bool,
    /// The decode GEMV asked for: never `Fixed` or `Auto` where the shader
    /// language lacks `dot4I8Packed` (the `packed_4x8_integer_dot_product`
    /// language feature), which the fixed-point GEMV needs.
    pub gemv: GemvPath,
    /// Prefill multiplies packed matrices on cooperative-matrix units
    /// (gemm_coop.wgsl), where the adapter has them and `--gemm` allows it.
    pub coop_gemm: bool,
    /// With `coop_gemm`: on inputs and weights rounded to f16 (`--gemm coop-f16`).
    pub coop_f16: bool,
    /// The fixed-point GEMV's input precision (`Fixed` `gemv` where not 24 bits).
    pub act_bits: ActBits,
    /// A CPU-emulated adapter (lavapipe, SwiftShader), which runs its threads
    /// a few at a time: the fixed-point GEMV gives each thread more of a row
    /// there (ops::fixed_gemv_lanes).
    pub cpu_emulated: bool,
}

/// One adapter as `tritium adapters` lists it.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    /// The most workgroup memory a kernel may take, in bytes.
    pub workgroup_bytes: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// What the adapter lacks for prefill on cooperative matrices, or `None`
    /// where it can ([`CoopOffer::lack`]).
    pub coop_gemm_lack: Option<String>,
}

/// Which adapter to use.
#[derive(Debug, Clone, Default)]
pub enum AdapterChoice {
    /// The high-performance adapter the platform suggests.
    #[default]
    Default,
    /// The n-th adapter of `tritium adapters`.
    Index(usize),
    /// The first adapter whose name contains this text (case-insensitive).
    Name(String),
}

impl AdapterChoice {
    /// `0`, `1`, ... pick by index; anything else by name.
    pub fn parse(text: &str) -> Self {
        match text.parse() {
            Ok(i) => AdapterChoice::Index(i),
            Err(_) => AdapterChoice::Name(text.to_string()),
        }
    }
}

/// Which kernel a decode step uses for the products of packed matrices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GemvPath {
    /// The fixed-point GEMV where the shader language has its integer dot
    /// product, else the f32 GEMV.
    #[default]
    Auto,
    /// The fixed-point GEMV (gemv_fixed.wgsl) for every model.
    Fixed,
    /// The f32 GEMV (gemv.wgsl) for every model.
    Float,
}

/// The precision of the fixed-point GEMV's inputs (fixed_word.wgsl): 24-bit
/// block fixed point rounds as finely as f32 does; 16 and 8 bits are opt-in
/// reduced precision (8 bits: the int8 activations of W1.58A8), for fewer
/// integer products per weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ActBits {
    #[default]
    Bits24,
    Bits16,
    Bits8,
}

impl ActBits {
    /// Signed-byte digits per value (fixed_word.wgsl's DIGITS).
    pub fn digits(self) -> u32 {
        match self {
            ActBits::Bits24 => 3,
            ActBits::Bits16 => 2,
            ActBits::Bits8 => 1,
        }
    }

    pub fn bits(self) -> u32 {
        8 * self.digits()
    }
}

/// Which kernel a prefill step uses for the products of packed matrices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GemmPath {
    /// Cooperative matrices (tensor cores) where the adapter has what
    /// gemm_coop.wgsl needs ([`CoopOffer::lack`]), else the f32 GEMM.
    #[default]
    Auto,
    /// The cooperative-matrix GEMM (gemm_coop.wgsl); an error where the adapter lacks it.
    Coop,
    /// The cooperative-matrix GEMM on inputs and weights rounded to f16: one
    /// tile product where `Coop` takes three (reduced precision, opt-in); an
    /// error where the adapter lacks it.
    CoopF16,
    /// The f32 GEMM (gemm.wgsl).
    Float,
}

/// Workgroup memory gemm_coop.wgsl takes: gemm_ternary_coop's four tiles of
/// 5,120 f16 and its 2,048 f32 output slots (gemm_ternary_coop_f16 takes
/// 45,056 bytes). An H200's Vulkan driver offers exactly this much.
pub const COOP_GEMM_WORKGROUP_BYTES: u32 = 49_152;

/// What an adapter offers of what gemm_coop.wgsl needs.
#[derive(Debug, Clone, Copy)]
pub struct CoopOffer {
    /// Cooperative matrices and f16 in shaders.
    pub features: bool,
    /// f16 16x16x16 tiles with f32 accumulation among its cooperative matrices.
    pub tiles: bool,
    /// Its smallest and largest subgroup.
    pub subgroup_sizes: (u32, u32),
    /// Its most workgroup memory, in bytes.
    pub workgroup_bytes: u32,
}

impl CoopOffer {
    /// What `adapter` offers.
    pub fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        let tiles = adapter.cooperative_matrix_properties().iter().any(|p| {
            (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        });
        CoopOffer {
            features: adapter.features().contains(needed),
            tiles,
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            workgroup_bytes: adapter.limits().max_compute_workgroup_storage_size,
        }
    }

    /// What keeps this offer from running gemm_coop.wgsl, or `None`: it needs
    /// cooperative matrices of f16 16x16x16 tiles with f32 accumulation, f16
    /// in shaders, subgroups of exactly 32 invocations (the kernel gives each
    /// 32 threads their own tiles) and COOP_GEMM_WORKGROUP_BYTES of workgroup
    /// memory.
    pub fn lack(&self) -> Option<String> {
        if !self.features {
            return Some("no cooperative matrices, or no f16 in shaders".into());
        }
        if !self.tiles {
            return Some("no f16 16x16x16 cooperative matrices with f32 accumulation".into());
        }
        if self.subgroup_sizes != (32, 32) {
            let (min, max) = self.subgroup_sizes;
            return Some(format!("subgroups of {min} to {max} invocations, not exactly 32"));
        }
        if self.workgroup_bytes < COOP_GEMM_WORKGROUP_BYTES {
            return Some(format!(
                "{} bytes of workgroup memory, where the kernel takes {COOP_GEMM_WORKGROUP_BYTES}",
                self.workgroup_bytes
            ));
        }
        None
    }
}

/// Options of the device request.
#[derive(Debug, Clone, Default)]
pub struct DeviceOptions {
    pub adapter: AdapterChoice,
    /// Use neither `shader-f16` nor subgroups even when present (the portable path).
    pub portable: bool,
    /// Reduce with subgroup operations where the adapter has them. Off by
    /// default: on an NVIDIA H100 the reductions through workgroup memory
    /// measured faster (0.5B decode 812 against 785 tokens/s, BENCHMARKS.md).
    pub subgroups: bool,
    pub gemv: GemvPath,
    pub gemm: GemmPath,
    pub act_bits: ActBits,
}

/// The device, its queue and what it can do. Cheap to clone.
#[derive(Clone)]
pub struct GpuContext {
    /// Kept so a window can draw with the same device (see `gui`).
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: GpuCaps,
    /// The first validation error wgpu reported outside an error scope.
    error: Arc<Mutex<Option<String>>>,
}

/// The display a window will draw on: a device that shares its instance with a
/// window's renderer needs it with the GL backend (see `gui`).
pub type DisplayHandle = Box<dyn wgpu::wgt::WgpuHasDisplayHandle>;

/// An instance over the native APIs (Vulkan, Metal, DX12, WebGPU), or over the
/// backends named by `WGPU_BACKEND`. GL is left to `WGPU_BACKEND=gl`: probing it
/// without a display prints noise and it lacks the features the kernels prefer.
fn instance(display: Option<DisplayHandle>) -> wgpu::Instance {
    let mut desc = match display {
        Some(display) => wgpu::InstanceDescriptor::new_with_display_handle_from_env(display),
        None => wgpu::InstanceDescriptor::new_without_display_handle_from_env(),
    };
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::PRIMARY;
    }
    // Fail a buffer creation that would overrun the device's memory budget (where
    // the driver reports one) instead of letting the device be lost.
    desc.memory_budget_thresholds.for_resource_creation = Some(95);
    wgpu::Instance::new(desc)
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let features = adapter.features();
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        max_binding_bytes: limits.max_storage_buffer_binding_size,
        max_buffer_bytes: limits.max_buffer_size,
        workgroup_bytes: limits.max_compute_workgroup_storage_size,
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        coop_gemm_lack: CoopOffer::of(adapter).lack(),
    }
}

/// Every adapter the platform offers, in a stable order.
pub async fn list_adapters() -> Vec<AdapterSummary> {
    let adapters = instance(None).enumerate_adapters(wgpu::Backends::all()).await;
    adapters.iter().enumerate().map(|(i, a)| summarize(i, a)).collect()
}

#[cfg(not(target_arch = "wasm32"))]
const NO_ADAPTER_HELP: &str = "no GPU adapter found. On Linux without a GPU, install Mesa's software Vulkan driver \
     (Debian/Ubuntu: apt-get install mesa-vulkan-drivers); otherwise check the GPU driver";
#[cfg(target_arch = "wasm32")]
const NO_ADAPTER_HELP: &str = "the browser offers no WebGPU adapter. Use a recent Chrome or Edge with WebGPU enabled \
     (chrome://gpu shows its status), or check that the GPU is not blocklisted";

async fn pick_adapter(instance: &wgpu::Instance, choice: &AdapterChoice) -> Result<wgpu::Adapter, GpuError> {
    let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
    let names = || all.iter().enumerate().map(|(i, a)| format!("{i}: {}", a.get_info().name)).collect::<Vec<_>>();
    match choice {
        AdapterChoice::Default => {
            let options = wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            };
            instance.request_adapter(&options).await.map_err(|_| GpuError::NoAdapter(NO_ADAPTER_HELP.into()))
        }
        AdapterChoice::Index(i) => all
            .get(*i)
            .cloned()
            .ok_or_else(|| GpuError::NoAdapter(format!("there is no adapter {i}; adapters: {}", names().join(", ")))),
        AdapterChoice::Name(name) => {
            let wanted = name.to_lowercase();
            all.iter().find(|a| a.get_info().name.to_lowercase().contains(&wanted)).cloned().ok_or_else(|| {
                GpuError::NoAdapter(format!("no adapter's name contains {name:?}; adapters: {}", names().join(", ")))
            })
        }
    }
}

impl GpuContext {
    /// Opens a device on the chosen adapter with the adapter's own buffer limits and
    /// the optional features it has (unless `portable`; subgroups if `subgroups`).
    pub async fn new(options: &DeviceOptions) -> Result<Self, GpuError> {
        Self::new_for_display(options, None).await
    }

    /// Like [`GpuContext::new`], on an instance that can also draw to windows of `display`.
    pub async fn new_for_display(options: &DeviceOptions, display: Option<DisplayHandle>) -> Result<Self, GpuError> {
        let instance = instance(display);
        let adapter = pick_adapter(&instance, &options.adapter).await?;
        let info = adapter.get_info();
        let available = adapter.features();
        let mut features = wgpu::Features::empty();
        if !options.portable {
            features |= available & wgpu::Features::SHADER_F16;
            if options.subgroups {
                features |= available & wgpu::Features::SUBGROUP;
            }
        }
        // Timestamps change no kernel; take them where the adapter has them.
        let timestamps = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
        if available.contains(timestamps) {
            features |= timestamps;
        }
        let packed_dot =
            instance.wgsl_language_features().contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct);
        // Fewer input bits are a property of the fixed-point GEMV: asking for
        // them asks for it.
        let reduced = options.act_bits != ActBits::Bits24;
        let gemv = match options.gemv {
            GemvPath::Float if reduced => {
                return Err(GpuError::Device(format!(
                    "--act-bits {} applies to the fixed-point GEMV; leave out --gemv float, or --act-bits",
                    options.act_bits.bits()
                )))
            }
            GemvPath::Fixed if !packed_dot => {
                return Err(GpuError::Device(
                    "--gemv fixed needs WGSL's packed_4x8_integer_dot_product, which this platform lacks; \
                     use --gemv float"
                        .into(),
                ))
            }
            GemvPath::Auto if reduced && !packed_dot => {
                return Err(GpuError::Device(format!(
                    "--act-bits {} needs the fixed-point GEMV, and so WGSL's packed_4x8_integer_dot_product, \
                     which this platform lacks; leave out --act-bits",
                    options.act_bits.bits()
                )))
            }
            GemvPath::Auto if reduced => GemvPath::Fixed,
            GemvPath::Auto if !packed_dot => GemvPath::Float,
            path => path,
        };
        let coop_lack = if options.portable {
            Some("the portable path (--portable) uses no optional feature".to_string())
        } else {
            CoopOffer::of(&adapter).lack()
        };
        let coop_gemm = match (options.gemm, coop_lack) {
            (GemmPath::Coop | GemmPath::CoopF16, Some(lack)) => {
                return Err(GpuError::Device(format!(
                    "--gemm {} needs the tensor-core GEMM, which {} cannot run ({lack}); use --gemm float",
                    if options.gemm == GemmPath::Coop { "coop" } else { "coop-f16" },
                    info.name,
                )))
            }
            (GemmPath::Float, _) => false,
            (_, lack) => lack.is_none(),
        };
        let mut experimental = wgpu::ExperimentalFeatures::disabled();
        if coop_gemm {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
            // SAFETY: the one experimental feature asked for is cooperative
            // matrices, used only by gemm_coop.wgsl, on the tile shape and types
            // the adapter lists (CoopOffer); its device test checks the
            // products against the CPU.
            experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
        }
        // Ask for everything the adapter allows: buffer and binding sizes matter most.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("tritium"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: experimental,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(format!("could not open {}: {e}", info.name)))?;
        let error = Arc::new(Mutex::new(None));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = slot.lock().expect("error slot");
            slot.get_or_insert_with(|| e.to_string());
        }));
        let slot = error.clone();
        device.set_device_lost_callback(move |reason, message| {
            // Dropping the device on purpose also reports a loss; only real ones matter.
            if reason != wgpu::DeviceLostReason::Destroyed {
                let mut slot = slot.lock().expect("error slot");
                slot.get_or_insert_with(|| {
                    format!("the GPU device was lost ({message}); reload the model (or the page) to start again")
                });
            }
        });
        let caps = GpuCaps {
            limits,
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: adapter.get_info().subgroup_min_size,
            timestamps: features.contains(timestamps),
            gemv,
            coop_gemm,
            coop_f16: coop_gemm && options.gemm == GemmPath::CoopF16,
            act_bits: options.act_bits,
            cpu_emulated: info.device_type == wgpu::DeviceType::Cpu,
        };
        Ok(GpuContext { instance, adapter, device, queue, info, caps, error })
    }

    /// Fails with the first validation error wgpu has reported, if any.
    pub fn check_errors(&self) -> Result<(), GpuError> {
        match self.error.lock().expect("error slot").take() {
            Some(msg) => Err(GpuError::Device(msg)),
            None => Ok(()),
        }
    }

    /// Lets the device run the callbacks of finished work. Natively this waits
    /// (with a timeout, so a stuck shader fails instead of hanging); in the browser
    /// the event loop runs them and this returns at once.
    fn drive(&self) -> Result<(), GpuError> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(POLL_TIMEOUT) })
            .map_err(|e| GpuError::Device(format!("waiting for the GPU failed after {POLL_TIMEOUT:?}: {e}")))?;
        self.check_errors()
    }

    /// Resolves when all work submitted so far has finished.
    pub async fn idle(&self) -> Result<(), GpuError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        self.drive()?;
        rx.await.map_err(|_| GpuError::Device("the GPU never finished its work".into()))?;
        self.check_errors()
    }

    /// Copies `size` bytes from the start of `buffer` (which needs `COPY_SRC`) back
    /// to the host.
    pub async fn read_buffer(&self, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>, GpuError> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        self.read_mapped(&staging).await
    }

    /// Maps a `MAP_READ` buffer whose copy has been submitted and returns its bytes.
    pub async fn read_mapped(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>, GpuError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = tx.send(result);
        });
        self.drive()?;
        rx.await
            .map_err(|_| GpuError::Device("the GPU never answered a read-back".into()))?
            .map_err(|e| GpuError::Device(format!("reading a buffer back failed: {e}")))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| GpuError::Device(format!("mapping a read-back buffer failed: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// A one-line description: adapter name, backend, the optional features
    /// enabled and how the kernels reduce.
    pub fn describe(&self) -> String {
        let mut features = Vec::new();
        if self.caps.shader_f16 {
            features.push("shader-f16");
        }
        features.push(if self.caps.subgroups { "subgroup reductions" } else { "workgroup-memory reductions" });
        if self.caps.coop_gemm {
            features.push("cooperative-matrix prefill");
        }
        let features = features.join(", ");
        // Browsers keep the adapter's name to themselves.
        let name = if self.info.name.is_empty() { "WebGPU adapter" } else { self.info.name.as_str() };
        format!("{name} ({:?}, {features})", self.info.backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an H200 offers through its Vulkan driver, as its adapter reports it.
    const H200: CoopOffer =
        CoopOffer { features: true, tiles: true, subgroup_sizes: (32, 32), workgroup_bytes: 49_152 };

    #[test]
    fn the_tensor_core_gemm_runs_where_everything_it_needs_is_offered() {
        assert_eq!(H200.lack(), None);
    }

    #[test]
    fn what_the_tensor_core_gemm_lacks_is_named() {
        let cases = [
            (CoopOffer { features: false, ..H200 }, "no cooperative matrices"),
            (CoopOffer { tiles: false, ..H200 }, "16x16x16"),
            (CoopOffer { subgroup_sizes: (16, 64), ..H200 }, "subgroups of 16 to 64 invocations"),
            (CoopOffer { workgroup_bytes: 32_768, ..H200 }, "32768 bytes of workgroup memory"),
        ];
        for (offer, lack) in cases {
            let said = offer.lack().expect("a lack");
            assert!(said.contains(lack), "{offer:?}: {said}");
        }
    }
}
