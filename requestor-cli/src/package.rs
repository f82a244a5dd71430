//! Task packages as the user names them, turned into what providers fetch:
//! a `hash:sha3:<hex>:<url>` is used as is; a plain URL is downloaded once to
//! hash it; a local `.wasm`, `.zip` or `docker save` tarball is hashed and
//! published through the session's [`FileTransfer`](crate::files::FileTransfer);
//! a local `.wat` is compiled to WebAssembly first, and a bare module is
//! wrapped in the original's zip format (`manifest.json` naming one entry
//! point after the file), since a `gftp://` URL carries no file name.

use std::path::{Path, PathBuf};

use sha3::Digest;

use crate::error::{RequestorError, Result};
use crate::files::FileTransfer;

/// The sha3-224 hex digest of `bytes`, as task packages name them.
pub fn sha3_224_hex(bytes: &[u8]) -> String {
    hex::encode(sha3::Sha3_224::digest(bytes))
}

/// Resolve a package given as `hash:sha3:...`, an http(s) URL or a local file.
/// `scratch` is where compiled `.wat` modules are written.
pub async fn resolve(spec: &str, files: &dyn FileTransfer, scratch: &Path) -> Result<String> {
    let error = |message: String| RequestorError::Package {
        package: spec.to_string(),
        message,
    };
    if spec.to_ascii_lowercase().starts_with("hash:") {
        let rest = &spec[5..];
        let mut parts = rest.trim_start_matches("//").splitn(3, ':');
        let (algorithm, digest, url) = (parts.next(), parts.next(), parts.next());
        if !algorithm.is_some_and(|a| a.eq_ignore_ascii_case("sha3"))
            || digest.is_none_or(|d| d.is_empty() || !d.bytes().all(|b| b.is_ascii_hexdigit()))
            || url.is_none_or(str::is_empty)
        {
            return Err(error("expected hash:sha3:<hex digest>:<url>".into()));
        }
        return Ok(spec.to_string());
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        let bytes = reqwest::get(spec)
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| error(format!("cannot download it to hash it: {e}")))?
            .bytes()
            .await
            .map_err(|e| error(format!("cannot download it to hash it: {e}")))?;
        return Ok(format!("hash:sha3:{}:{spec}", sha3_224_hex(&bytes)));
    }
    let path = PathBuf::from(spec);
    let bytes = std::fs::read(&path).map_err(|e| error(format!("cannot read the file: {e}")))?;
    let (path, bytes) = if path.extension().is_some_and(|ext| ext == "wat") {
        let wasm = wat::parse_bytes(&bytes)
            .map_err(|e| error(format!("not valid WebAssembly text: {e}")))?
            .into_owned();
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| "main".into());
        std::fs::create_dir_all(scratch).map_err(|e| RequestorError::io(scratch, e))?;
        let compiled = scratch.join(format!("{stem}.wasm"));
        std::fs::write(&compiled, &wasm).map_err(|e| RequestorError::io(&compiled, e))?;
        (compiled, wasm)
    } else {
        (path, bytes)
    };
    let (path, bytes) = if bytes.starts_with(b"\0asm") {
        let zipped = zip_module(&path, &bytes).map_err(|e| error(format!("cannot zip it: {e}")))?;
        let zip_path = scratch.join(format!("{}.zip", entry_point_of(&path)));
        std::fs::create_dir_all(scratch).map_err(|e| RequestorError::io(scratch, e))?;
        std::fs::write(&zip_path, &zipped).map_err(|e| RequestorError::io(&zip_path, e))?;
        (zip_path, zipped)
    } else {
        (path, bytes)
    };
    let url = files.publish(&path).await?;
    Ok(format!("hash:sha3:{}:{url}", sha3_224_hex(&bytes)))
}

/// The entry point a bare module is named by: its file's stem.
fn entry_point_of(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .filter(|stem| !stem.is_empty())
        .unwrap_or_else(|| "main".into())
}

/// A WASM package in the original's format holding the bare module at
/// `path`: one entry point named after the file, `/golem/input` read-only,
/// `/golem/output` and `/golem/work` read-write (what a bare module gets).
fn zip_module(path: &Path, module: &[u8]) -> std::result::Result<Vec<u8>, zip::result::ZipError> {
    use std::io::Write;
    let id = entry_point_of(path);
    let manifest = serde_json::json!({
        "id": id,
        "name": id,
        "entry-points": [{"id": id, "wasm-path": format!("{id}.wasm")}],
        "mount-points": [{"ro": "/golem/input"}, {"rw": "/golem/output"}, {"rw": "/golem/work"}],
    });
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    writer.start_file("manifest.json", options)?;
    writer.write_all(manifest.to_string().as_bytes())?;
    writer.start_file(format!("{id}.wasm"), options)?;
    writer.write_all(module)?;
    Ok(writer.finish()?.into_inner())
}
