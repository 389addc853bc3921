//! `tritium gui`: a desktop chat window. egui draws it through eframe's wgpu
//! renderer on the very device and queue the engine computes with, so weights
//! are uploaded once and no second GPU context exists.
//!
//! - [`app`]: the window; [`worker`]: the thread that owns the engine;
//! - [`transcript`]: conversations as JSON; [`markdown`]: code blocks in replies;
//! - [`file_browser`]: choosing folders and files inside the window.

mod app;
mod file_browser;
mod markdown;
pub mod transcript;
mod worker;

use std::path::PathBuf;

use anyhow::anyhow;
use eframe::egui_wgpu::{WgpuConfiguration, WgpuSetup, WgpuSetupExisting};
use winit::event_loop::EventLoop;

use crate::gpu::{DeviceOptions, GpuContext};
use transcript::Settings;

/// What `tritium gui` was started with.
pub struct GuiOptions {
    pub model: Option<PathBuf>,
    pub device: DeviceOptions,
    pub ctx: Option<usize>,
    pub system: String,
    pub settings: Settings,
    /// Written after every reply and when the window closes.
    pub save_transcript: Option<PathBuf>,
}

/// winit's OS errors start with the place in winit's own source that raised
/// them ("os error at <file>.rs:<line>: "), which tells a user nothing.
fn without_source_location(message: &str) -> &str {
    match message.strip_prefix("os error at ").and_then(|rest| rest.split_once(".rs:")) {
        Some((_, after)) => after.split_once(": ").map_or(message, |(_, reason)| reason),
        None => message,
    }
}

pub fn run(options: GuiOptions) -> anyhow::Result<()> {
    // The event loop comes first: the GPU instance needs its display handle
    // when it runs on GL, so that the window's surface and the engine share it.
    let event_loop = EventLoop::<eframe::UserEvent>::with_user_event().build().map_err(|e| {
        anyhow!(
            "could not connect to a display ({}); run it in a desktop session (DISPLAY or WAYLAND_DISPLAY set), \
             or talk to the model in a terminal with `tritium chat`",
            without_source_location(&e.to_string()).trim_end_matches('.')
        )
    })?;
    let display = Box::new(event_loop.owned_display_handle());
    let gpu = pollster::block_on(GpuContext::new_for_display(&options.device, Some(display)))?;
    let native = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("Tritium")
            .with_app_id("tritium")
            .with_inner_size([1000.0, 720.0])
            .with_min_inner_size([560.0, 360.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options: WgpuConfiguration {
            wgpu_setup: WgpuSetup::Existing(WgpuSetupExisting {
                instance: gpu.instance.clone(),
                adapter: gpu.adapter.clone(),
                device: gpu.device.clone(),
                queue: gpu.queue.clone(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut window = eframe::create_native(
        "Tritium",
        native,
        Box::new(move |cc| Ok(Box::new(app::ChatApp::new(cc, gpu, options)))),
        &event_loop,
    );
    event_loop.run_app(&mut window).map_err(|e| anyhow!("the window's event loop failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::without_source_location;

    #[test]
    fn os_errors_lose_the_place_in_winit_they_came_from() {
        let raised = "os error at /src/winit-0.30.13/src/platform_impl/linux/mod.rs:765: neither WAYLAND_DISPLAY nor \
                      WAYLAND_SOCKET nor DISPLAY is set.";
        assert_eq!(without_source_location(raised), "neither WAYLAND_DISPLAY nor WAYLAND_SOCKET nor DISPLAY is set.");
        assert_eq!(without_source_location("the display refused: no"), "the display refused: no");
    }
}
