//! Stripping the names out of a `docker save` tarball on its way into the
//! engine. The engine's load tags what the archive's `manifest.json` names in
//! `RepoTags` (and, on older or newer loaders, what the legacy `repositories`
//! file and OCI `index.json` name), so a requestor's package could move any tag
//! on the provider's engine (`nginx:latest`, another package's
//! `golem-vm-cache:<sha3>`). [`TagStripper`] rewrites the tar as it streams:
//! `manifest.json` gets `RepoTags: null`, `index.json` loses its image-name
//! annotations, `repositories` is dropped; everything else passes through
//! byte for byte. A gzip-compressed archive is decompressed on the way (the
//! engine receives a plain tar). The package's sha3 is computed upstream over
//! the original bytes, so the rewrite does not change what is verified.
//!
//! It must never let a name through: entries are parsed the way Go's
//! `archive/tar` (the engine's reader) parses them — PAX `path`/`size`, GNU
//! long names, header-only types — and anything that could place a file at
//! one of those names without the rewrite seeing it (a link or directory with
//! that name, an entry below a symlink, sparse files, unknown entry types, a
//! second manifest) refuses the whole archive.

use std::collections::HashSet;
use std::io::Write;

use serde_json::Value;

/// The largest `manifest.json`/`index.json` (and PAX or GNU long-name
/// record) accepted; real ones are a few KiB.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

const BLOCK: usize = 512;

/// Why an archive cannot be loaded without its tags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripError {
    #[error("the image package is not a `docker save` tarball: {0}")]
    Malformed(String),
    #[error("the image package is refused: {0}")]
    Refused(String),
    #[error(
        "the image package holds {0} images in its manifest.json; a task package holds exactly one"
    )]
    ImageCount(usize),
    #[error("the image package has no manifest.json (only `docker save` tarballs are loaded)")]
    NoManifest,
    #[error("the image package is not valid gzip: {0}")]
    Gzip(String),
    #[error("cannot load the image package: it is not a complete `docker save` tarball (it ends before the tar's end)")]
    Incomplete,
}

/// What happens to the body of the entry being read.
#[derive(Debug)]
enum Body {
    /// Copied through (after its header, already emitted).
    Pass,
    /// Skipped together with its header (`repositories`).
    Drop,
    /// Collected, then rewritten and emitted with a new header.
    Rewrite(Metadata),
    /// A PAX or GNU long-name record for the next entry: collected.
    Special(SpecialKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metadata {
    Manifest,
    Index,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpecialKind {
    Pax,
    LongName,
    LongLink,
}

#[derive(Debug)]
enum State {
    /// Waiting for the next 512-byte header.
    Header,
    /// Inside an entry: `remaining` data bytes, then `padding` bytes.
    Data {
        body: Body,
        remaining: u64,
        padding: usize,
    },
    /// After the end-of-archive block: the engine's reader stops here.
    End,
}

/// Streaming rewrite of a plain tar (see the module docs).
#[derive(Debug)]
pub struct TarRewriter {
    input: Vec<u8>,
    state: State,
    /// Raw blocks of the PAX/GNU records read since the last real entry.
    pending_raw: Vec<u8>,
    pending_pax_path: Option<String>,
    pending_pax_size: Option<u64>,
    pending_long_name: Option<String>,
    /// The header (raw) and name of the entry being collected for a rewrite.
    collected: Vec<u8>,
    collected_header: Vec<u8>,
    /// Cleaned names of the symlinks seen: nothing may be written below them.
    symlinks: HashSet<String>,
    manifests: usize,
}

impl Default for TarRewriter {
    fn default() -> Self {
        TarRewriter::new()
    }
}

impl TarRewriter {
    pub fn new() -> TarRewriter {
        TarRewriter {
            input: Vec::new(),
            state: State::Header,
            pending_raw: Vec::new(),
            pending_pax_path: None,
            pending_pax_size: None,
            pending_long_name: None,
            collected: Vec::new(),
            collected_header: Vec::new(),
            symlinks: HashSet::new(),
            manifests: 0,
        }
    }

    /// Feed the next bytes; returns the rewritten bytes ready to go on.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, StripError> {
        self.input.extend_from_slice(bytes);
        let mut output = Vec::with_capacity(self.input.len());
        let mut at = 0;
        loop {
            let available = self.input.len() - at;
            match &mut self.state {
                State::End => {
                    output.extend_from_slice(&self.input[at..]);
                    at = self.input.len();
                    break;
                }
                State::Header => {
                    if available < BLOCK {
                        break;
                    }
                    let mut header = [0u8; BLOCK];
                    header.copy_from_slice(&self.input[at..at + BLOCK]);
                    at += BLOCK;
                    self.header(&header, &mut output)?;
                }
                State::Data {
                    body,
                    remaining,
                    padding,
                } => {
                    if *remaining > 0 {
                        if available == 0 {
                            break;
                        }
                        let take = usize::try_from(*remaining)
                            .unwrap_or(usize::MAX)
                            .min(available);
                        let chunk = &self.input[at..at + take];
                        match body {
                            Body::Pass => output.extend_from_slice(chunk),
                            Body::Drop => {}
                            Body::Rewrite(_) => {
                                if self.collected.len() + take > MAX_METADATA_BYTES {
                                    return Err(StripError::Refused(format!(
                                        "an archive metadata file is larger than {MAX_METADATA_BYTES} bytes"
                                    )));
                                }
                                self.collected.extend_from_slice(chunk);
                            }
                            Body::Special(_) => {
                                if self.collected.len() + take > MAX_METADATA_BYTES {
                                    return Err(StripError::Refused(format!(
                                        "a tar extended header is larger than {MAX_METADATA_BYTES} bytes"
                                    )));
                                }
                                self.collected.extend_from_slice(chunk);
                                self.pending_raw.extend_from_slice(chunk);
                            }
                        }
                        *remaining -= take as u64;
                        at += take;
                        continue;
                    }
                    if *padding > 0 {
                        if available == 0 {
                            break;
                        }
                        let take = (*padding).min(available);
                        let chunk = &self.input[at..at + take];
                        match body {
                            Body::Pass => output.extend_from_slice(chunk),
                            Body::Special(_) => self.pending_raw.extend_from_slice(chunk),
                            Body::Drop | Body::Rewrite(_) => {}
                        }
                        *padding -= take;
                        at += take;
                        continue;
                    }
                    let finished = std::mem::replace(&mut self.state, State::Header);
                    if let State::Data { body, .. } = finished {
                        self.finish_entry(body, &mut output)?;
                    }
                }
            }
        }
        self.input.drain(..at);
        Ok(output)
    }

    /// Check the archive is complete enough to be loaded without names.
    pub fn finish(&mut self) -> Result<Vec<u8>, StripError> {
        // `docker save` always writes the end-of-archive block.
        if !matches!(self.state, State::End) {
            return Err(StripError::Incomplete);
        }
        if self.manifests == 0 {
            return Err(StripError::NoManifest);
        }
        Ok(std::mem::take(&mut self.input))
    }

    fn header(&mut self, header: &[u8; BLOCK], output: &mut Vec<u8>) -> Result<(), StripError> {
        if header.iter().all(|byte| *byte == 0) {
            if !self.pending_raw.is_empty() {
                return Err(StripError::Malformed(
                    "an extended header is not followed by an entry".into(),
                ));
            }
            output.extend_from_slice(header);
            self.state = State::End;
            return Ok(());
        }
        if looks_compressed(header) {
            // The engine would decompress a load that starts like this and
            // read an archive this rewrite never saw.
            return Err(StripError::Refused(
                "a tar header starts like compressed data".into(),
            ));
        }
        let typeflag = header[156];
        let header_size = parse_numeric(&header[124..136])
            .ok_or_else(|| StripError::Malformed("an entry's size is not a number".into()))?;
        let special = match typeflag {
            b'x' => Some(SpecialKind::Pax),
            b'L' => Some(SpecialKind::LongName),
            b'K' => Some(SpecialKind::LongLink),
            _ => None,
        };
        if let Some(kind) = special {
            if header_size > MAX_METADATA_BYTES as u64 {
                return Err(StripError::Refused(format!(
                    "a tar extended header is larger than {MAX_METADATA_BYTES} bytes"
                )));
            }
            if self.pending_raw.len() > 2 * MAX_METADATA_BYTES {
                return Err(StripError::Refused(
                    "too many tar extended headers before one entry".into(),
                ));
            }
            self.pending_raw.extend_from_slice(header);
            self.collected.clear();
            self.state = State::Data {
                body: Body::Special(kind),
                remaining: header_size,
                padding: padding(header_size),
            };
            return Ok(());
        }
        if typeflag == b'g' {
            // A global PAX header: Go returns it as an entry of its own (the
            // engine ignores it) and drops a local header before it.
            if !self.pending_raw.is_empty() {
                return Err(StripError::Refused(
                    "an extended header is followed by a global one".into(),
                ));
            }
            output.extend_from_slice(header);
            self.state = State::Data {
                body: Body::Pass,
                remaining: header_size,
                padding: padding(header_size),
            };
            return Ok(());
        }
        // A real entry: its name and size as Go merges them (a GNU long name
        // wins over a PAX path, which wins over the header's).
        let raw_name = if let Some(long_name) = self.pending_long_name.take() {
            long_name
        } else if let Some(path) = self.pending_pax_path.take() {
            path
        } else {
            ustar_name(header)
        };
        self.pending_pax_path = None;
        let size = self.pending_pax_size.take().unwrap_or(header_size);
        let name = clean_path(&raw_name);
        // Go reads an old-style regular file whose name ends in '/' as a
        // directory, which has no data whatever its size says.
        let old_style_directory = typeflag == b'\0' && raw_name.ends_with('/');
        let data_size = if header_only(typeflag) || old_style_directory {
            0
        } else {
            size
        };
        let is_regular = matches!(typeflag, b'0' | b'\0') && !raw_name.ends_with('/');
        match typeflag {
            b'0' | b'\0' | b'1' | b'2' | b'3' | b'4' | b'5' | b'6' | b'7' => {}
            other => {
                return Err(StripError::Refused(format!(
                    "the entry {raw_name:?} has the tar type {:?}, which image archives do not use",
                    other as char
                )))
            }
        }
        let below_symlink = name
            .match_indices('/')
            .map(|(at, _)| &name[..at])
            .find(|ancestor| self.symlinks.contains(*ancestor));
        if let Some(below) = below_symlink {
            return Err(StripError::Refused(format!(
                "the entry {raw_name:?} lies below the symlink {below:?}"
            )));
        }
        let kind = match name.as_str() {
            "manifest.json" => Some(Some(Metadata::Manifest)),
            "index.json" => Some(Some(Metadata::Index)),
            "repositories" => Some(None),
            _ => None,
        };
        let body = match kind {
            Some(_) if !is_regular => {
                return Err(StripError::Refused(format!(
                    "{name} is not a regular file in the archive (tar type {:?})",
                    typeflag as char
                )))
            }
            Some(Some(metadata)) => {
                if metadata == Metadata::Manifest {
                    self.manifests += 1;
                    if self.manifests > 1 {
                        return Err(StripError::Refused(
                            "the archive holds manifest.json twice".into(),
                        ));
                    }
                }
                if data_size > MAX_METADATA_BYTES as u64 {
                    return Err(StripError::Refused(format!(
                        "{name} is larger than {MAX_METADATA_BYTES} bytes"
                    )));
                }
                self.pending_raw.clear();
                self.collected.clear();
                self.collected_header = header.to_vec();
                Body::Rewrite(metadata)
            }
            Some(None) => {
                self.pending_raw.clear();
                Body::Drop
            }
            None => {
                if typeflag == b'2' {
                    self.symlinks.insert(name.clone());
                }
                output.append(&mut self.pending_raw);
                output.extend_from_slice(header);
                Body::Pass
            }
        };
        // An entry without data is closed by `push`'s next turn.
        self.state = State::Data {
            body,
            remaining: data_size,
            padding: padding(data_size),
        };
        Ok(())
    }

    fn finish_entry(&mut self, body: Body, output: &mut Vec<u8>) -> Result<(), StripError> {
        match body {
            Body::Pass | Body::Drop => Ok(()),
            Body::Special(kind) => {
                let record = std::mem::take(&mut self.collected);
                match kind {
                    SpecialKind::Pax => {
                        let (path, size) = parse_pax(&record)?;
                        // Go keeps only the last PAX header before an entry.
                        self.pending_pax_path = path;
                        self.pending_pax_size = size;
                    }
                    SpecialKind::LongName => {
                        self.pending_long_name = Some(c_string(&record));
                    }
                    SpecialKind::LongLink => {}
                }
                Ok(())
            }
            Body::Rewrite(metadata) => {
                let text = std::mem::take(&mut self.collected);
                let rewritten = match metadata {
                    Metadata::Manifest => strip_manifest(&text)?,
                    Metadata::Index => strip_index(&text)?,
                };
                let name = match metadata {
                    Metadata::Manifest => "manifest.json",
                    Metadata::Index => "index.json",
                };
                let header = rewritten_header(&self.collected_header, name, rewritten.len());
                output.extend_from_slice(&header);
                output.extend_from_slice(&rewritten);
                output.resize(output.len() + padding(rewritten.len() as u64), 0);
                Ok(())
            }
        }
    }
}

/// Whether `block` starts with a magic number the engine's load takes for
/// compression (bzip2, gzip, xz, zstd, a zstd skippable frame).
fn looks_compressed(block: &[u8]) -> bool {
    block.starts_with(b"BZh")
        || block.starts_with(&[0x1f, 0x8b])
        || block.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00])
        || block.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (block.len() >= 4 && block[0] & 0xf0 == 0x50 && block[1..4] == [0x2a, 0x4d, 0x18])
}

/// Bytes of zero padding after `size` bytes of data.
fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Types whose size field Go ignores: they never have data.
fn header_only(typeflag: u8) -> bool {
    matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6')
}

/// A NUL-terminated string field.
fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The name as Go reads it from the header: the ustar/PAX prefix joins the
/// name (star's shorter prefix too); GNU and v7 headers have no prefix.
fn ustar_name(header: &[u8; BLOCK]) -> String {
    let name = c_string(&header[0..100]);
    let magic = &header[257..263];
    let version = &header[263..265];
    if magic != b"ustar\0" || version != b"00" {
        return name;
    }
    let prefix = if &header[508..512] == b"tar\0" {
        c_string(&header[345..476])
    } else {
        c_string(&header[345..500])
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// A tar numeric field: octal text (spaces and NULs trimmed), or GNU base-256.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|byte| byte & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for byte in &field[1..] {
            value = value.checked_mul(256)?.checked_add(u64::from(*byte))?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// The path the engine writes `name` to, relative to its extraction root
/// (`.`, empty and `..` components resolved like Go's `filepath.Clean`).
fn clean_path(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// The `path` and `size` records of a PAX extended header; sparse-file
/// records are refused (image archives never hold sparse files).
fn parse_pax(record: &[u8]) -> Result<(Option<String>, Option<u64>), StripError> {
    let malformed = || StripError::Malformed("a PAX extended header is malformed".into());
    let mut path = None;
    let mut size = None;
    let mut rest = record;
    while !rest.is_empty() {
        if rest.iter().all(|byte| *byte == 0) {
            break;
        }
        let space = rest.iter().position(|b| *b == b' ').ok_or_else(malformed)?;
        let length: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(malformed)?;
        if length <= space + 1 || length > rest.len() || rest[length - 1] != b'\n' {
            return Err(malformed());
        }
        let entry = &rest[space + 1..length - 1];
        let equals = entry
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(malformed)?;
        let key = String::from_utf8_lossy(&entry[..equals]);
        let value = &entry[equals + 1..];
        match key.as_ref() {
            "path" => path = Some(String::from_utf8_lossy(value).into_owned()),
            "size" => {
                size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.parse().ok())
                        .ok_or_else(malformed)?,
                )
            }
            key if key.starts_with("GNU.sparse") => {
                return Err(StripError::Refused(
                    "the archive holds a sparse file, which image archives do not use".into(),
                ))
            }
            _ => {}
        }
        rest = &rest[length..];
    }
    Ok((path, size))
}

/// `manifest.json` with `RepoTags: null` on its one image.
fn strip_manifest(text: &[u8]) -> Result<Vec<u8>, StripError> {
    let mut manifest: Value = serde_json::from_slice(text)
        .map_err(|error| StripError::Malformed(format!("manifest.json is not JSON: {error}")))?;
    let images = manifest
        .as_array_mut()
        .ok_or_else(|| StripError::Malformed("manifest.json is not a list of images".into()))?;
    if images.len() != 1 {
        return Err(StripError::ImageCount(images.len()));
    }
    for image in images.iter_mut() {
        let entry = image.as_object_mut().ok_or_else(|| {
            StripError::Malformed("manifest.json names an image that is not an object".into())
        })?;
        entry.insert("RepoTags".into(), Value::Null);
    }
    serde_json::to_vec(&manifest)
        .map_err(|error| StripError::Malformed(format!("manifest.json: {error}")))
}

/// Annotations by which OCI loaders name the images of `index.json`.
const NAME_ANNOTATIONS: &[&str] = &[
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

/// `index.json` without the annotations that name images.
fn strip_index(text: &[u8]) -> Result<Vec<u8>, StripError> {
    let mut index: Value = serde_json::from_slice(text)
        .map_err(|error| StripError::Malformed(format!("index.json is not JSON: {error}")))?;
    if let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) {
        for descriptor in manifests {
            if let Some(annotations) = descriptor
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                for name in NAME_ANNOTATIONS {
                    annotations.remove(*name);
                }
            }
        }
    }
    if let Some(annotations) = index.get_mut("annotations").and_then(Value::as_object_mut) {
        for name in NAME_ANNOTATIONS {
            annotations.remove(*name);
        }
    }
    serde_json::to_vec(&index)
        .map_err(|error| StripError::Malformed(format!("index.json: {error}")))
}

/// A plain ustar header for a rewritten file: the original's mode, owner and
/// time, a new name, size and checksum.
fn rewritten_header(original: &[u8], name: &str, size: usize) -> [u8; BLOCK] {
    let mut header = [0u8; BLOCK];
    header[..BLOCK.min(original.len())].copy_from_slice(&original[..BLOCK.min(original.len())]);
    header[0..100].fill(0);
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[156] = b'0';
    header[157..257].fill(0); // no link name
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[345..512].fill(0); // no prefix (nor GNU times)
    header[148..156].fill(b' ');
    let checksum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    header
}

/// The whole rewrite: decompresses a gzip-compressed archive, then strips
/// the tar (see the module docs). Feed it the package's bytes in order.
pub struct TagStripper {
    compression: Compression,
    tar: TarRewriter,
}

enum Compression {
    /// Fewer than two bytes seen: not yet known.
    Unknown(Vec<u8>),
    Plain,
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
}

impl Default for TagStripper {
    fn default() -> Self {
        TagStripper::new()
    }
}

impl TagStripper {
    pub fn new() -> TagStripper {
        TagStripper {
            compression: Compression::Unknown(Vec::new()),
            tar: TarRewriter::new(),
        }
    }

    /// Feed the next bytes of the package; returns plain tar bytes to load.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<u8>, StripError> {
        if let Compression::Unknown(head) = &mut self.compression {
            head.extend_from_slice(bytes);
            if head.len() < 2 {
                return Ok(Vec::new());
            }
            let head = std::mem::take(head);
            self.compression = if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Vec::new())))
            } else {
                Compression::Plain
            };
            return self.push_known(&head);
        }
        self.push_known(bytes)
    }

    fn push_known(&mut self, bytes: &[u8]) -> Result<Vec<u8>, StripError> {
        match &mut self.compression {
            Compression::Unknown(_) => Ok(Vec::new()),
            Compression::Plain => self.tar.push(bytes),
            Compression::Gzip(decoder) => {
                decoder
                    .write_all(bytes)
                    .and_then(|()| decoder.flush())
                    .map_err(|error| StripError::Gzip(error.to_string()))?;
                let plain = std::mem::take(decoder.get_mut());
                self.tar.push(&plain)
            }
        }
    }

    /// The end of the package: the last bytes to load, or why it cannot be.
    pub fn finish(&mut self) -> Result<Vec<u8>, StripError> {
        let mut output = Vec::new();
        match &mut self.compression {
            Compression::Unknown(head) => {
                let head = std::mem::take(head);
                self.compression = Compression::Plain;
                output = self.tar.push(&head)?;
            }
            Compression::Plain => {}
            Compression::Gzip(decoder) => {
                decoder
                    .try_finish()
                    .map_err(|error| StripError::Gzip(error.to_string()))?;
                let plain = std::mem::take(decoder.get_mut());
                output = self.tar.push(&plain)?;
            }
        }
        output.extend(self.tar.finish()?);
        Ok(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ustar header for `name` of `size` bytes and type `typeflag`.
    fn header(name: &str, size: usize, typeflag: u8, link: &str) -> Vec<u8> {
        let mut header = vec![0u8; BLOCK];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = typeflag;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].fill(b' ');
        let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
        header
    }

    fn entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut bytes = header(name, data.len(), b'0', "");
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len() + padding(data.len() as u64), 0);
        bytes
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, value) in records {
            let line = format!(" {key}={value}\n");
            let mut length = line.len() + 1;
            while line.len() + length.to_string().len() != length {
                length = line.len() + length.to_string().len();
            }
            body.extend_from_slice(format!("{length}{line}").as_bytes());
        }
        let mut bytes = header("PaxHeaders/x", body.len(), b'x', "");
        bytes.extend_from_slice(&body);
        bytes.resize(bytes.len() + padding(body.len() as u64), 0);
        bytes
    }

    fn end() -> Vec<u8> {
        vec![0u8; 2 * BLOCK]
    }

    const MANIFEST: &str = r#"[{"Config":"abc.json","RepoTags":["victim-app:latest","golem-vm-cache:00ff"],"Layers":["l1/layer.tar"]}]"#;

    /// The entries of a plain tar as (name, type, data), read independently.
    fn entries(tar: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
        let mut found = Vec::new();
        let mut at = 0;
        while at + BLOCK <= tar.len() {
            let block: [u8; BLOCK] = tar[at..at + BLOCK].try_into().unwrap_or([0; BLOCK]);
            if block.iter().all(|b| *b == 0) {
                break;
            }
            let size = parse_numeric(&block[124..136]).unwrap_or(0) as usize;
            let size = if header_only(block[156]) { 0 } else { size };
            at += BLOCK;
            found.push((ustar_name(&block), block[156], tar[at..at + size].to_vec()));
            at += size + padding(size as u64);
        }
        found
    }

    fn strip_in_pieces(archive: &[u8], piece: usize) -> Result<Vec<u8>, StripError> {
        let mut stripper = TagStripper::new();
        let mut output = Vec::new();
        for chunk in archive.chunks(piece) {
            output.extend(stripper.push(chunk)?);
        }
        output.extend(stripper.finish()?);
        Ok(output)
    }

    fn archive() -> Vec<u8> {
        let mut archive = Vec::new();
        archive.extend(entry("l1/layer.tar", &[7u8; 1000]));
        archive.extend(header("l2/layer.tar", 0, b'2', "../l1/layer.tar"));
        archive.extend(entry("abc.json", b"{}"));
        archive.extend(entry("repositories", br#"{"victim-app":{"latest":"l1"}}"#));
        archive.extend(entry("manifest.json", MANIFEST.as_bytes()));
        archive.extend(end());
        archive
    }

    #[test]
    fn manifest_tags_are_nulled_and_repositories_dropped_in_any_chunking() {
        let archive = archive();
        for piece in [1, 7, 511, 512, 513, 4096, archive.len()] {
            let stripped = strip_in_pieces(&archive, piece).unwrap_or_else(|e| panic!("{e}"));
            let found = entries(&stripped);
            let names: Vec<&str> = found.iter().map(|(name, ..)| name.as_str()).collect();
            assert_eq!(
                names,
                ["l1/layer.tar", "l2/layer.tar", "abc.json", "manifest.json"],
                "piece {piece}"
            );
            assert_eq!(found[0].2, vec![7u8; 1000]);
            let manifest: Value = serde_json::from_slice(&found[3].2).unwrap_or_default();
            assert_eq!(manifest[0]["RepoTags"], Value::Null, "{manifest}");
            assert_eq!(manifest[0]["Layers"][0], "l1/layer.tar");
            assert!(!String::from_utf8_lossy(&stripped).contains("victim-app"));
            // The rewritten header's checksum is valid.
            let at = stripped.len() - 2 * BLOCK - 2 * BLOCK;
            let header = &stripped[at..at + BLOCK];
            let mut sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
            sum -= header[148..156].iter().map(|b| u32::from(*b)).sum::<u32>();
            sum += 8 * u32::from(b' ');
            assert_eq!(parse_numeric(&header[148..156]), Some(u64::from(sum)));
        }
    }

    #[test]
    fn gzip_archives_are_decompressed_and_stripped() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&archive()).unwrap_or_default();
        let gzipped = encoder.finish().unwrap_or_default();
        let stripped = strip_in_pieces(&gzipped, 100).unwrap_or_else(|e| panic!("{e}"));
        assert!(!String::from_utf8_lossy(&stripped).contains("victim-app"));
        assert_eq!(entries(&stripped).len(), 4);
    }

    #[test]
    fn names_hidden_by_pax_long_names_or_dot_paths_are_still_rewritten() {
        for prefix in [pax(&[("path", "manifest.json")]), {
            let mut long = header("././@LongLink", 14, b'L', "");
            long.extend_from_slice(b"manifest.json\0");
            long.resize(long.len() + padding(14), 0);
            long
        }] {
            let mut archive = prefix;
            archive.extend(entry("innocent.json", MANIFEST.as_bytes()));
            archive.extend(end());
            let stripped = strip_in_pieces(&archive, 300).unwrap_or_else(|e| panic!("{e}"));
            assert!(!String::from_utf8_lossy(&stripped).contains("victim-app"));
        }
        let mut archive = entry("./x/../manifest.json", MANIFEST.as_bytes());
        archive.extend(end());
        let stripped = strip_in_pieces(&archive, 300).unwrap_or_else(|e| panic!("{e}"));
        assert!(!String::from_utf8_lossy(&stripped).contains("victim-app"));
    }

    #[test]
    fn a_pax_size_is_honoured_so_entries_cannot_hide_in_data() {
        // The ustar header says 0 bytes; PAX says the manifest follows as data.
        let inner = entry("manifest.json", MANIFEST.as_bytes());
        let mut archive = pax(&[("size", &inner.len().to_string())]);
        archive.extend(header("blob", 0, b'0', ""));
        archive.extend(&inner);
        archive.extend(entry("manifest.json", MANIFEST.as_bytes()));
        archive.extend(end());
        // Read as the engine reads it, the hidden copy is data of `blob`
        // (a parser ignoring the PAX size would see two manifests and refuse).
        let stripped = strip_in_pieces(&archive, 512).unwrap_or_else(|e| panic!("{e}"));
        let (name, _, data) = entries(&stripped).pop().unwrap_or_default();
        assert_eq!(name, "manifest.json");
        let manifest: Value = serde_json::from_slice(&data).unwrap_or_default();
        assert_eq!(manifest[0]["RepoTags"], Value::Null, "{manifest}");
    }

    #[test]
    fn links_and_entries_below_symlinks_that_could_place_a_manifest_are_refused() {
        let cases: Vec<Vec<u8>> = vec![
            header("manifest.json", 0, b'2', "evil.json"),
            header("manifest.json", 0, b'1', "evil.json"),
            header("manifest.json/", 0, b'5', ""),
            [
                header("dir", 0, b'2', "."),
                entry("dir/manifest.json", MANIFEST.as_bytes()),
            ]
            .concat(),
            header("sparse", 0, b'S', ""),
            // Would be decompressed again by the engine, into unseen entries.
            header("BZh91AY&SY", 0, b'0', ""),
            [entry("layer.tar", b"x"), header("BZh9", 0, b'5', "")].concat(),
            [
                entry("manifest.json", MANIFEST.as_bytes()),
                entry("manifest.json", MANIFEST.as_bytes()),
            ]
            .concat(),
        ];
        for case in cases {
            let mut archive = case;
            archive.extend(end());
            let error = strip_in_pieces(&archive, 512).err();
            assert!(matches!(error, Some(StripError::Refused(_))), "{error:?}");
        }
    }

    #[test]
    fn a_truncated_archive_is_refused_as_incomplete() {
        let archive = archive();
        for cut in [BLOCK + 100, archive.len() - 2 * BLOCK] {
            assert_eq!(
                strip_in_pieces(&archive[..cut], 512).err(),
                Some(StripError::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn archives_without_exactly_one_image_are_refused() {
        let mut archive = entry("layer.tar", b"x");
        archive.extend(end());
        assert_eq!(
            strip_in_pieces(&archive, 512).err(),
            Some(StripError::NoManifest)
        );
        let mut archive = entry("manifest.json", br#"[{"Config":"a"},{"Config":"b"}]"#);
        archive.extend(end());
        assert_eq!(
            strip_in_pieces(&archive, 512).err(),
            Some(StripError::ImageCount(2))
        );
    }

    #[test]
    fn index_json_loses_its_image_names() {
        let index = r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:1","annotations":{"io.containerd.image.name":"docker.io/library/victim-app:latest","org.opencontainers.image.ref.name":"latest","other":"kept"}}]}"#;
        let mut archive = entry("index.json", index.as_bytes());
        archive.extend(entry("manifest.json", MANIFEST.as_bytes()));
        archive.extend(end());
        let stripped = strip_in_pieces(&archive, 512).unwrap_or_else(|e| panic!("{e}"));
        let found = entries(&stripped);
        let index: Value = serde_json::from_slice(&found[0].2).unwrap_or_default();
        assert_eq!(
            index["manifests"][0]["annotations"],
            serde_json::json!({"other": "kept"})
        );
    }

    #[test]
    fn numeric_fields_parse_like_go() {
        assert_eq!(parse_numeric(b"00000001750\0"), Some(1000));
        assert_eq!(parse_numeric(b"      \0"), Some(0));
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(parse_numeric(b"9\0"), None);
        assert_eq!(clean_path("./a/../manifest.json"), "manifest.json");
        assert!(looks_compressed(&[0x28, 0xb5, 0x2f, 0xfd, 0]));
        assert!(looks_compressed(&[0x5a, 0x2a, 0x4d, 0x18]));
        assert!(looks_compressed(&[0xfd, b'7', b'z', b'X', b'Z', 0]));
        assert!(!looks_compressed(b"manifest.json"));
        assert_eq!(clean_path("/manifest.json/"), "manifest.json");
    }
}
