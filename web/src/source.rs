//! Model files in the browser: `File`s the user picked (read with
//! `Blob.slice`) or a folder served over HTTP (read with `Range` requests).
//! Either way only the byte ranges asked for are read: a multi-gigabyte
//! checkpoint never becomes one `ArrayBuffer`.

use std::collections::BTreeMap;

use js_sys::Uint8Array;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, File, Response};

use tritium::gpu::weights::{ReadFuture, WeightSource};
use tritium::model::catalog::{parse_index, Catalog, TensorRef, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
use tritium::model::{safetensors, Config, ModelError};

/// A model folder: files by name, or a base URL.
pub enum Folder {
    Files(BTreeMap<String, File>),
    Url(String),
}

fn js_error(what: &str, e: JsValue) -> ModelError {
    let detail = e.as_string().or_else(|| js_sys::JSON::stringify(&e).ok().and_then(|s| s.as_string()));
    ModelError::Checkpoint(format!("{what}: {}", detail.unwrap_or_else(|| "unknown error".into())))
}

/// `fetch` from a window or a worker.
async fn fetch(url: &str, range: Option<(u64, u64)>) -> Result<Response, ModelError> {
    let init = web_sys::RequestInit::new();
    let request = web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| js_error(url, e))?;
    if let Some((start, len)) = range {
        let header = format!("bytes={start}-{}", start + len - 1);
        request.headers().set("Range", &header).map_err(|e| js_error(url, e))?;
    }
    let global = js_sys::global();
    let promise = if let Some(worker) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        worker.fetch_with_request(&request)
    } else {
        global.unchecked_ref::<web_sys::Window>().fetch_with_request(&request)
    };
    let response: Response =
        JsFuture::from(promise).await.map_err(|e| js_error(&format!("could not fetch {url}"), e))?.unchecked_into();
    Ok(response)
}

async fn response_bytes(response: &Response, url: &str) -> Result<Vec<u8>, ModelError> {
    let buffer = response.array_buffer().map_err(|e| js_error(url, e))?;
    let buffer = JsFuture::from(buffer).await.map_err(|e| js_error(&format!("reading {url}"), e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

impl Folder {
    fn url(&self, name: &str) -> String {
        match self {
            Folder::Url(base) => format!("{}/{name}", base.trim_end_matches('/')),
            Folder::Files(_) => name.to_string(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Folder::Url(base) => base.clone(),
            Folder::Files(_) => "the chosen files".into(),
        }
    }

    /// The whole of a small file, or `None` when the folder has no such file.
    pub async fn read_optional(&self, name: &str) -> Result<Option<Vec<u8>>, ModelError> {
        match self {
            Folder::Files(files) => match files.get(name) {
                Some(file) => Ok(Some(blob_bytes(file, 0, file.size() as u64).await?)),
                None => Ok(None),
            },
            Folder::Url(_) => {
                let url = self.url(name);
                let response = fetch(&url, None).await?;
                match response.status() {
                    200 => Ok(Some(response_bytes(&response, &url).await?)),
                    404 => Ok(None),
                    status => Err(ModelError::Checkpoint(format!("{url}: HTTP {status}"))),
                }
            }
        }
    }

    async fn read(&self, name: &str) -> Result<Vec<u8>, ModelError> {
        self.read_optional(name)
            .await?
            .ok_or_else(|| ModelError::NotAModelFolder(format!("{} has no {name}", self.describe())))
    }

    /// `len` bytes of `name` from `start`, and the file's total size.
    async fn read_range(&self, name: &str, start: u64, len: u64) -> Result<(Vec<u8>, u64), ModelError> {
        match self {
            Folder::Files(files) => {
                let file = files
                    .get(name)
                    .ok_or_else(|| ModelError::NotAModelFolder(format!("the chosen files lack {name}")))?;
                let size = file.size() as u64;
                Ok((blob_bytes(file, start, len.min(size.saturating_sub(start))).await?, size))
            }
            Folder::Url(_) => {
                let url = self.url(name);
                let response = fetch(&url, Some((start, len))).await?;
                match response.status() {
                    206 => {}
                    200 => {
                        return Err(ModelError::Checkpoint(format!(
                            "{url}: the server ignored the Range request; serve the folder with a server that \
                             supports ranges (`tritium serve-web --model DIR` does)"
                        )))
                    }
                    404 => return Err(ModelError::NotAModelFolder(format!("{url}: not found (HTTP 404)"))),
                    status => return Err(ModelError::Checkpoint(format!("{url}: HTTP {status}"))),
                }
                // "bytes START-END/TOTAL"
                let total = response
                    .headers()
                    .get("content-range")
                    .ok()
                    .flatten()
                    .and_then(|r| r.rsplit('/').next().and_then(|t| t.parse().ok()))
                    .ok_or_else(|| {
                        ModelError::Checkpoint(format!("{url}: the server's answer lacks a Content-Range size"))
                    })?;
                Ok((response_bytes(&response, &url).await?, total))
            }
        }
    }
}

async fn blob_bytes(blob: &Blob, start: u64, len: u64) -> Result<Vec<u8>, ModelError> {
    let slice =
        blob.slice_with_f64_and_f64(start as f64, (start + len) as f64).map_err(|e| js_error("slicing a file", e))?;
    let buffer = JsFuture::from(slice.array_buffer()).await.map_err(|e| js_error("reading a file", e))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// A checkpoint in the browser: headers read, tensor bytes fetched on demand.
pub struct WebCheckpoint {
    pub folder: Folder,
    pub catalog: Catalog,
}

impl WebCheckpoint {
    /// Reads `config.json`, the index if there is one, and every safetensors header.
    pub async fn open(folder: Folder) -> Result<Self, ModelError> {
        let config_bytes = folder.read(CONFIG_FILE).await?;
        let config = Config::from_json(&String::from_utf8_lossy(&config_bytes))?;
        let (files, weight_map) = match folder.read_optional(INDEX_FILE).await? {
            Some(index) => parse_index(&String::from_utf8_lossy(&index))?,
            None => (vec![SINGLE_FILE.to_string()], BTreeMap::new()),
        };
        let mut headers = Vec::new();
        for file in &files {
            let bad = |msg: String| ModelError::Safetensors { file: file.into(), msg };
            let (prefix, size) = folder.read_range(file, 0, 8).await?;
            let n = safetensors::header_len(&prefix, size).map_err(bad)?;
            let (header, _) = folder.read_range(file, 8, n).await?;
            headers.push(safetensors::parse_header(&header, size).map_err(bad)?);
        }
        let location = format!("the checkpoint in {}", folder.describe());
        let catalog = Catalog::new(config, files, &weight_map, headers, location)?;
        Ok(WebCheckpoint { folder, catalog })
    }

    fn tensor(&self, name: &str) -> Result<&TensorRef, ModelError> {
        self.catalog.get(name).ok_or_else(|| ModelError::MissingTensor {
            name: name.to_string(),
            context: "asked for by the GPU upload".into(),
        })
    }
}

impl WeightSource for WebCheckpoint {
    fn read<'a>(&'a self, name: &'a str, offset: u64, out: &'a mut [u8]) -> ReadFuture<'a> {
        Box::pin(async move {
            let t = self.tensor(name)?;
            let file = &self.catalog.files[t.shard];
            let (bytes, _) = self.folder.read_range(file, t.entry.offset + offset, out.len() as u64).await?;
            if bytes.len() != out.len() {
                return Err(ModelError::Safetensors {
                    file: file.into(),
                    msg: format!("asked for {} bytes of {name}, got {} (file truncated?)", out.len(), bytes.len()),
                });
            }
            out.copy_from_slice(&bytes);
            Ok(())
        })
    }
}
