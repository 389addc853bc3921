//! `serve-web`: serves the browser demo and a model folder on 127.0.0.1, with
//! the HTTP Range requests the demo reads weights with.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args, Debug)]
#[command(after_help = "Example:
  scripts/build-web.sh                      # once: builds web/pkg (wasm + JS glue)
  tritium serve-web --model DIR             # then open the printed address in Chrome or Edge

The model folder is served at /model/; a deep link that loads it and generates at once:
  http://127.0.0.1:8080/?model=/model/&prompt=Hello&chat=1&max_tokens=32&temperature=0")]
pub struct ServeWebArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Model folder to serve at /model/.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The demo's folder (with index.html and the built pkg/).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/web"))]
    pub root: PathBuf,
}

pub fn run(args: ServeWebArgs) -> Result<()> {
    if !args.root.join("index.html").is_file() {
        bail!("{} has no index.html: pass the demo's folder with --root", args.root.display());
    }
    if !args.root.join("pkg/tritium_web_bg.wasm").is_file() {
        bail!("{} has no pkg/tritium_web_bg.wasm: build it first with scripts/build-web.sh", args.root.display());
    }
    if let Some(model) = &args.model {
        if !model.join("config.json").is_file() {
            bail!("{} is not a model folder (no config.json)", model.display());
        }
    }
    let server = tiny_http::Server::http(("127.0.0.1", args.port))
        .map_err(|e| anyhow::anyhow!("could not listen on 127.0.0.1:{}: {e}", args.port))?;
    let address = server.server_addr().to_ip().context("the server's address")?;
    println!("Serving the Tritium demo at http://{address}/");
    if args.model.is_some() {
        println!("Model folder at http://{address}/model/ — open http://{address}/?model=/model/ to load it");
    }
    for request in server.incoming_requests() {
        let root = args.root.clone();
        let model = args.model.clone();
        std::thread::spawn(move || {
            if let Err(e) = respond(request, &root, model.as_deref()) {
                eprintln!("serve-web: {e:#}");
            }
        });
    }
    Ok(())
}

/// A request path made of plain names only (no `..`, no absolute parts).
fn safe_relative(path: &str) -> Option<PathBuf> {
    let path = Path::new(path.trim_start_matches('/'));
    path.components().all(|c| matches!(c, Component::Normal(_))).then(|| path.to_path_buf())
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// `bytes=START-END` or `bytes=START-` of a file of `size` bytes, as `(start, len)`.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = match end.trim() {
        "" => size.checked_sub(1)?,
        end => end.parse::<u64>().ok()?.min(size.checked_sub(1)?),
    };
    (start <= end).then_some((start, end - start + 1))
}

fn respond(request: tiny_http::Request, root: &Path, model: Option<&Path>) -> Result<()> {
    let url = request.url().split(['?', '#']).next().unwrap_or("/").to_string();
    let file = match (url.strip_prefix("/model/"), model) {
        (Some(name), Some(model)) => safe_relative(name).map(|n| model.join(n)),
        (Some(_), None) => None,
        (None, _) if url == "/" => Some(root.join("index.html")),
        (None, _) => safe_relative(&url).map(|p| root.join(p)),
    };
    let header = |name: &str, value: &str| tiny_http::Header::from_bytes(name, value).expect("a valid header");
    let Some(path) = file.filter(|p| p.is_file()) else {
        let response = tiny_http::Response::from_string(format!("{url} not found")).with_status_code(404);
        return Ok(request.respond(response)?);
    };
    let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    let range = request.headers().iter().find(|h| h.field.equiv("Range")).map(|h| parse_range(h.value.as_str(), size));
    let common = [
        header("Content-Type", content_type(&path)),
        header("Accept-Ranges", "bytes"),
        header("Cache-Control", "no-cache"),
    ];
    match range {
        Some(None) => {
            let response =
                tiny_http::Response::empty(416).with_header(header("Content-Range", &format!("bytes */{size}")));
            Ok(request.respond(response)?)
        }
        Some(Some((start, len))) => {
            file.seek(SeekFrom::Start(start))?;
            let mut response =
                tiny_http::Response::new(206.into(), common.to_vec(), file.take(len), Some(len as usize), None);
            let end = start + len - 1;
            response.add_header(header("Content-Range", &format!("bytes {start}-{end}/{size}")));
            Ok(request.respond(response)?)
        }
        None => {
            let response = tiny_http::Response::new(200.into(), common.to_vec(), file, Some(size as usize), None);
            Ok(request.respond(response)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_paths() {
        assert_eq!(parse_range("bytes=0-7", 100), Some((0, 8)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=90-500", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=50-10", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(safe_relative("/pkg/tritium_web.js"), Some(PathBuf::from("pkg/tritium_web.js")));
        assert_eq!(safe_relative("/../etc/passwd"), None);
        assert_eq!(safe_relative("/model/../../x"), None);
    }
}
