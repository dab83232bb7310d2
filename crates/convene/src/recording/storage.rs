//! Where finished recordings are kept: a directory (`file:///abs/dir`, by default
//! `<data dir>/recordings`) or an S3-compatible bucket (`s3://bucket[/prefix]`), chosen by one
//! URL (`CONVENE_RECORDING_URL`).
//!
//! Built on the `object_store` crate (S3 over reqwest + rustls; no hand-written signing). For
//! `s3://` the credentials, region and endpoint come from the usual AWS variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for MinIO, moto and the like; an `http://` endpoint
//! allows plain HTTP), read through [`RecordingStorage::from_url_with`] so that tests can pass
//! their own without touching the process environment.
//!
//! Keys are `/`-separated relative names such as `<meeting>/<recording>/alice-TR_x.webm`:
//! never absolute, no empty, `.` or `..` segment, no control character, and none of `\ % #`
//! (the last two because the directory backend could not give such names back unchanged).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use tokio::io::AsyncReadExt;

/// Size of one part of a multipart upload (and the largest file sent in one PUT). S3 allows
/// 10,000 parts, so parts grow for files over about 78 GiB (see [`part_size`]).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight at once during a multipart upload (each holds one part in memory).
const PARTS_IN_FLIGHT: usize = 2;
/// Chunks of a file read for [`RecordingStorage::get`] on the directory backend.
const READ_CHUNK: usize = 128 * 1024;

/// The AWS variables read for `s3://` (names as the AWS tools spell them; object_store parses
/// each into its own setting).
const AWS_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    // AWS_REGION first: AWS_DEFAULT_REGION only fills a region not yet set.
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
    "AWS_UNSIGNED_PAYLOAD",
    "AWS_SKIP_SIGNATURE",
    "AWS_CHECKSUM_ALGORITHM",
    "AWS_SERVER_SIDE_ENCRYPTION",
    "AWS_SSE_KMS_KEY_ID",
    "AWS_SSE_BUCKET_KEY_ENABLED",
    "AWS_REQUEST_PAYER",
];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage URL cannot be used.
    #[error("bad recording storage URL: {0}")]
    BadUrl(String),
    /// A key or prefix that is not a plain relative name.
    #[error("bad recording key: {0}")]
    BadKey(String),
    #[error("no such recording object")]
    NotFound,
    /// The filesystem or the bucket failed (the message names no secret).
    #[error("recording storage: {0}")]
    Backend(String),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => StorageError::NotFound,
            other => StorageError::Backend(other.to_string()),
        }
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Backend(format!("{what} {}: {e}", path.display()))
    }
}

/// Where finished recordings are kept. Cheap to clone.
#[derive(Clone)]
pub struct RecordingStorage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    /// The directory backend, for moving files in place and reading them directly.
    local: Option<Arc<LocalFileSystem>>,
    description: String,
}

impl fmt::Debug for RecordingStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RecordingStorage")
            .field(&self.inner.description)
            .finish()
    }
}

impl RecordingStorage {
    /// `file:///abs/dir` or `s3://bucket[/prefix]`; for s3 the credentials, region and endpoint
    /// come from the process environment. The directory is created if missing.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Self::from_url_with(url, |name| std::env::var(name).ok())
    }

    /// [`Self::from_url`] with the AWS variables read through `env` instead of the process
    /// environment.
    pub fn from_url_with(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StorageError> {
        let parsed =
            url::Url::parse(url).map_err(|e| StorageError::BadUrl(format!("{url}: {e}")))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(StorageError::BadUrl(
                "credentials do not belong in the URL (use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                    .into(),
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(StorageError::BadUrl(format!(
                "{url}: no query or fragment expected"
            )));
        }
        match parsed.scheme() {
            "file" => {
                // `file:relative` parses as `file:///relative`: asked for is the written form.
                let written = url
                    .get(..7)
                    .is_some_and(|s| s.eq_ignore_ascii_case("file://"));
                if !written || !matches!(parsed.host_str(), None | Some("") | Some("localhost")) {
                    return Err(StorageError::BadUrl(format!(
                        "{url}: a file URL names an absolute directory, as file:///abs/dir"
                    )));
                }
                let dir = parsed.to_file_path().map_err(|()| {
                    StorageError::BadUrl(format!(
                        "{url}: a file URL names an absolute directory, as file:///abs/dir"
                    ))
                })?;
                Self::from_dir(&dir)
            }
            "s3" => {
                let bucket = parsed.host_str().unwrap_or_default();
                if bucket.is_empty()
                    || !bucket
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
                {
                    return Err(StorageError::BadUrl(format!(
                        "{url}: expected s3://bucket[/prefix]"
                    )));
                }
                let prefix = parsed.path().trim_matches('/');
                let prefix = if prefix.is_empty() {
                    None
                } else {
                    Some(
                        parse_key(prefix)
                            .map_err(|e| StorageError::BadUrl(format!("{url}: bad prefix: {e}")))?,
                    )
                };
                Self::s3(bucket, prefix, &env)
            }
            other => Err(StorageError::BadUrl(format!(
                "{url}: unsupported scheme {other:?} (file:///abs/dir or s3://bucket[/prefix])"
            ))),
        }
    }

    /// Storage in the directory `dir` (absolute; created if missing).
    pub fn from_dir(dir: &Path) -> Result<Self, StorageError> {
        if !dir.is_absolute() {
            return Err(StorageError::BadUrl(format!(
                "{}: the recording directory must be absolute",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Backend(format!("creating {}: {e}", dir.display())))?;
        let fs = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
        let fs = Arc::new(fs);
        let description = url::Url::from_directory_path(dir)
            .map(|u| u.to_string().trim_end_matches('/').to_string())
            .unwrap_or_else(|()| format!("file://{}", dir.display()));
        Ok(Self {
            inner: Arc::new(Inner {
                store: fs.clone(),
                local: Some(fs),
                description,
            }),
        })
    }

    fn s3(
        bucket: &str,
        prefix: Option<ObjectPath>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, StorageError> {
        // No overall request timeout: a download streamed to a slow viewer may take as long as
        // the recording lasts. A stalled connection is caught by the read timeout instead.
        let client = ClientOptions::new()
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(10))
            .with_read_timeout(Duration::from_secs(60));
        let mut builder = AmazonS3Builder::new().with_client_options(client);
        for name in AWS_ENV {
            let Some(value) = env(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        let endpoint = env("AWS_ENDPOINT_URL_S3")
            .filter(|v| !v.is_empty())
            .or_else(|| env("AWS_ENDPOINT_URL").filter(|v| !v.is_empty()));
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        let s3 = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| StorageError::BadUrl(format!("s3://{bucket}: {e}")))?;
        let mut description = format!("s3://{bucket}");
        let store: Arc<dyn ObjectStore> = match prefix {
            Some(prefix) => {
                description = format!("{description}/{prefix}");
                Arc::new(PrefixStore::new(s3, prefix))
            }
            None => Arc::new(s3),
        };
        if let Some(endpoint) = endpoint {
            // Only scheme, host and port: an endpoint URL could carry user information.
            if let Ok(u) = url::Url::parse(&endpoint) {
                let host = u.host_str().unwrap_or_default();
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                description = format!("{description} (endpoint {}://{host}{port})", u.scheme());
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                local: None,
                description,
            }),
        })
    }

    /// What the URL names, without secrets, for logs and docs (`file:///var/lib/convene/recordings`,
    /// `s3://bucket/prefix (endpoint http://127.0.0.1:9000)`).
    pub fn describe(&self) -> String {
        self.inner.description.clone()
    }

    /// True for `file://`: the objects are files under the directory.
    pub fn is_local(&self) -> bool {
        self.inner.local.is_some()
    }

    /// The file that holds `key` on the directory backend (`None` for s3). The recorder may
    /// write there directly; [`Self::put_file`] from that very path then does nothing.
    pub fn local_path(&self, key: &str) -> Result<Option<PathBuf>, StorageError> {
        let path = parse_key(key)?;
        match &self.inner.local {
            Some(fs) => Ok(Some(fs.path_to_filesystem(&path)?)),
            None => Ok(None),
        }
    }

    /// Stores the local file `local` under `key` and returns its size.
    ///
    /// On s3 the file is uploaded (multipart in parts of 8 MiB or more, read from disk part by
    /// part, for files over one part) and `local` is left in place. On the directory backend the
    /// file is **moved** there (a rename; across filesystems a copy to a staging name that
    /// listings skip, then a rename and the removal of `local`); a file already at its place is
    /// left as it is.
    pub async fn put_file(&self, key: &str, local: &Path) -> Result<u64, StorageError> {
        let path = parse_key(key)?;
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| io_error("reading", local, e))?;
        if !meta.is_file() {
            return Err(StorageError::Backend(format!(
                "{} is not a regular file",
                local.display()
            )));
        }
        if let Some(fs) = &self.inner.local {
            let dest = fs.path_to_filesystem(&path)?;
            let same = match (
                tokio::fs::canonicalize(local).await,
                tokio::fs::canonicalize(&dest).await,
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if same {
                return Ok(meta.len());
            }
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io_error("creating", parent, e))?;
            }
            match tokio::fs::rename(local, &dest).await {
                Ok(()) => return Ok(meta.len()),
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
                Err(e) => return Err(io_error("moving to", &dest, e)),
            }
            let n = self.upload(&path, local, meta.len()).await?;
            tokio::fs::remove_file(local)
                .await
                .map_err(|e| io_error("removing", local, e))?;
            return Ok(n);
        }
        self.upload(&path, local, meta.len()).await
    }

    /// Copies `local` to `path` through object_store: one PUT for a file of at most one part,
    /// else a multipart upload streamed from disk.
    async fn upload(&self, path: &ObjectPath, local: &Path, len: u64) -> Result<u64, StorageError> {
        let store = &self.inner.store;
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(|e| io_error("opening", local, e))?;
        let part = part_size(len);
        if len <= part as u64 {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf)
                .await
                .map_err(|e| io_error("reading", local, e))?;
            let n = buf.len() as u64;
            store.put(path, PutPayload::from(buf)).await?;
            return Ok(n);
        }
        let upload = store.put_multipart(path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let mut total = 0u64;
        loop {
            let chunk = match read_part(&mut file, part).await {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io_error("reading", local, e));
                }
            };
            if chunk.is_empty() {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            total += chunk.len() as u64;
            writer.put(chunk);
        }
        writer.finish().await?;
        Ok(total)
    }

    /// Size of an object in bytes.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        let path = parse_key(key)?;
        Ok(self.inner.store.head(&path).await?.size)
    }

    /// The bytes `range` (`start..end`, end exclusive; an end past the object is cut to its
    /// size) of an object as a stream of chunks, or the whole object with `None`; with the
    /// object's total size. A range starting at or past the end of the object (unless empty) is
    /// an error: check it against [`Self::size`] first to answer 416.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
        let path = parse_key(key)?;
        if let Some(r) = &range {
            if r.start > r.end {
                return Err(StorageError::Backend(format!(
                    "bad range {}..{}",
                    r.start, r.end
                )));
            }
            if r.start == r.end {
                let size = self.size(key).await?;
                return Ok((size, futures::stream::empty().boxed()));
            }
        }
        if let Some(fs) = &self.inner.local {
            let file_path = fs.path_to_filesystem(&path)?;
            return local_get(file_path, range).await;
        }
        let options = GetOptions::new().with_range(range.map(GetRange::Bounded));
        let result = self.inner.store.get_opts(&path, options).await?;
        let size = result.meta.size;
        Ok((
            size,
            result.into_stream().map_err(StorageError::from).boxed(),
        ))
    }

    /// Deletes every object under `prefix` (a recording's folder; segment-wise, so `a/b` does
    /// not cover `a/bc/x`) and returns how many there were. An empty prefix is refused.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StorageError> {
        let prefix = parse_prefix(prefix)?.ok_or_else(|| {
            StorageError::BadKey("refusing to delete everything (empty prefix)".into())
        })?;
        let store = &self.inner.store;
        let locations = store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = 0u64;
        let mut results = store.delete_stream(locations);
        while let Some(result) = results.next().await {
            match result {
                Ok(_) => deleted += 1,
                // Gone meanwhile: what was asked for.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        drop(results);
        if let Some(fs) = &self.inner.local {
            // Directories left empty below the prefix (files are cleaned up with their parents).
            if let Ok(dir) = fs.path_to_filesystem(&prefix) {
                let _ = tokio::task::spawn_blocking(move || remove_empty_dirs(&dir)).await;
            }
        }
        Ok(deleted)
    }

    /// Keys and sizes of the objects under `prefix` (every object with `""`), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>, StorageError> {
        let prefix = parse_prefix(prefix)?;
        let mut out: Vec<(String, u64)> = self
            .inner
            .store
            .list(prefix.as_ref())
            .map_ok(|meta| (meta.location.to_string(), meta.size))
            .try_collect()
            .await?;
        out.sort();
        Ok(out)
    }
}

/// Part size for a file of `len` bytes: 8 MiB, or more to stay within S3's 10,000 parts.
fn part_size(len: u64) -> usize {
    const MIB: u64 = 1024 * 1024;
    let needed = len.div_ceil(9_000).div_ceil(MIB) * MIB;
    (needed as usize).max(PART_SIZE)
}

/// Reads up to `size` bytes (less only at the end of the file).
async fn read_part(file: &mut tokio::fs::File, size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(size);
    let mut filled = 0;
    while filled < size {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

async fn local_get(
    path: PathBuf,
    range: Option<Range<u64>>,
) -> Result<(u64, BoxStream<'static, Result<Bytes, StorageError>>), StorageError> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| io_error("opening", &path, e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| io_error("reading", &path, e))?;
    if !meta.is_file() {
        return Err(StorageError::NotFound);
    }
    let size = meta.len();
    let (start, end) = match range {
        Some(r) => {
            if r.start >= size {
                return Err(StorageError::Backend(format!(
                    "range {}..{} starts past the end of an object of {size} bytes",
                    r.start, r.end
                )));
            }
            (r.start, r.end.min(size))
        }
        None => (0, size),
    };
    if start > 0 {
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| io_error("reading", &path, e))?;
    }
    let stream = futures::stream::try_unfold(
        (file, end - start, path),
        |(mut file, remaining, path)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK as u64) as usize;
            let mut buf = BytesMut::zeroed(want);
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| io_error("reading", &path, e))?;
            if n == 0 {
                return Err(StorageError::Backend(format!(
                    "{} ended early (truncated meanwhile?)",
                    path.display()
                )));
            }
            buf.truncate(n);
            Ok(Some((buf.freeze(), (file, remaining - n as u64, path))))
        },
    );
    Ok((size, stream.boxed()))
}

/// Removes `dir` and the directories under it that hold no file (best effort).
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Checks a key: relative, `/`-separated, no empty, `.` or `..` segment, no control character,
/// none of `\ % #`.
fn parse_key(key: &str) -> Result<ObjectPath, StorageError> {
    let bad = |why: &str| Err(StorageError::BadKey(format!("{key:?}: {why}")));
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') {
        return bad("absolute");
    }
    for segment in key.split('/') {
        match segment {
            "" => return bad("empty segment"),
            "." | ".." => return bad("relative segment"),
            _ => {}
        }
        if let Some(c) = segment
            .chars()
            .find(|c| c.is_control() || matches!(c, '\\' | '%' | '#'))
        {
            return bad(&format!("character {c:?} not allowed"));
        }
    }
    ObjectPath::parse(key).map_err(|e| StorageError::BadKey(format!("{key:?}: {e}")))
}

/// A prefix: a key, optionally with one trailing `/`; `None` for the empty prefix.
fn parse_prefix(prefix: &str) -> Result<Option<ObjectPath>, StorageError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed.is_empty() {
        if prefix.is_empty() {
            return Ok(None);
        }
        return Err(StorageError::BadKey(format!("{prefix:?}: absolute")));
    }
    parse_key(trimmed).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(
        (size, stream): (u64, BoxStream<'static, Result<Bytes, StorageError>>),
    ) -> (u64, Vec<u8>) {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        (size, chunks.concat())
    }

    fn file_url(dir: &Path) -> String {
        url::Url::from_directory_path(dir).unwrap().to_string()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn storage_file_put_size_get_list_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("recordings");
        let storage = RecordingStorage::from_url(&file_url(&root)).unwrap();
        assert!(storage.is_local());
        assert!(root.is_dir(), "the directory is created");
        assert_eq!(
            storage.describe(),
            format!("file://{}", root.canonicalize().unwrap().display())
        );

        let data = pattern(300_000);
        let src = tmp.path().join("alice.webm");
        std::fs::write(&src, &data).unwrap();
        let n = storage
            .put_file("m1/r1/alice-TR_x.webm", &src)
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(!src.exists(), "moved, not copied");
        assert!(root.join("m1/r1/alice-TR_x.webm").is_file());

        // Names with spaces and non-ASCII come back as given.
        let src2 = tmp.path().join("b");
        std::fs::write(&src2, b"hello").unwrap();
        storage.put_file("m1/r1/bé b.ogg", &src2).await.unwrap();
        let src3 = tmp.path().join("c");
        std::fs::write(&src3, b"other").unwrap();
        storage.put_file("m1/r10/x.ogg", &src3).await.unwrap();

        assert_eq!(
            storage.size("m1/r1/alice-TR_x.webm").await.unwrap(),
            300_000
        );
        let (size, whole) =
            collect(storage.get("m1/r1/alice-TR_x.webm", None).await.unwrap()).await;
        assert_eq!(size, 300_000);
        assert_eq!(whole, data);
        let (size, part) = collect(
            storage
                .get("m1/r1/alice-TR_x.webm", Some(1000..200_000))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(size, 300_000);
        assert_eq!(part, &data[1000..200_000]);
        // An end past the object is cut; an empty range gives nothing.
        let (_, tail) = collect(
            storage
                .get("m1/r1/alice-TR_x.webm", Some(299_990..400_000))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(tail, &data[299_990..]);
        let (size, empty) = collect(
            storage
                .get("m1/r1/alice-TR_x.webm", Some(5..5))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((size, empty.len()), (300_000, 0));
        assert!(matches!(
            storage
                .get("m1/r1/alice-TR_x.webm", Some(300_000..300_001))
                .await,
            Err(StorageError::Backend(_))
        ));

        assert_eq!(
            storage.list("m1/r1").await.unwrap(),
            vec![
                ("m1/r1/alice-TR_x.webm".to_string(), 300_000),
                ("m1/r1/bé b.ogg".to_string(), 5)
            ]
        );
        assert_eq!(storage.list("m1/").await.unwrap().len(), 3);
        assert_eq!(storage.list("").await.unwrap().len(), 3);
        assert!(storage.list("nothing/here").await.unwrap().is_empty());

        assert!(matches!(
            storage.size("m1/r1/missing").await,
            Err(StorageError::NotFound)
        ));
        assert!(matches!(
            storage.get("m1/r1/missing", None).await,
            Err(StorageError::NotFound)
        ));

        // Segment-wise: m1/r1 does not cover m1/r10.
        assert_eq!(storage.delete_prefix("m1/r1").await.unwrap(), 2);
        assert!(!root.join("m1/r1").exists());
        assert_eq!(
            storage.list("").await.unwrap(),
            vec![("m1/r10/x.ogg".to_string(), 5)]
        );
        assert_eq!(storage.delete_prefix("m1/r1").await.unwrap(), 0);
        assert_eq!(storage.delete_prefix("m1/").await.unwrap(), 1);
        assert!(storage.list("").await.unwrap().is_empty());
        assert!(root.is_dir(), "the root stays");
    }

    #[tokio::test]
    async fn storage_file_put_in_place_and_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = RecordingStorage::from_dir(tmp.path()).unwrap();
        let path = storage.local_path("m/r/a.webm").unwrap().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"in place").unwrap();
        assert_eq!(storage.put_file("m/r/a.webm", &path).await.unwrap(), 8);
        assert_eq!(std::fs::read(&path).unwrap(), b"in place");

        let src = tmp.path().join("new");
        std::fs::write(&src, b"new").unwrap();
        assert_eq!(storage.put_file("m/r/a.webm", &src).await.unwrap(), 3);
        assert_eq!(storage.size("m/r/a.webm").await.unwrap(), 3);

        assert!(matches!(
            storage
                .put_file("m/r/b.webm", &tmp.path().join("absent"))
                .await,
            Err(StorageError::NotFound)
        ));
    }

    /// The copy used across filesystems (and for every s3 upload): single PUT and multipart.
    #[tokio::test]
    async fn storage_file_upload_copy_path() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = RecordingStorage::from_dir(&tmp.path().join("root")).unwrap();
        for (key, len) in [("s/small", 1000), ("s/large", PART_SIZE * 2 + 123)] {
            let data = pattern(len);
            let src = tmp.path().join("src");
            std::fs::write(&src, &data).unwrap();
            let path = parse_key(key).unwrap();
            assert_eq!(
                storage.upload(&path, &src, len as u64).await.unwrap(),
                len as u64
            );
            assert!(src.exists(), "upload copies");
            let (size, got) = collect(storage.get(key, None).await.unwrap()).await;
            assert_eq!(size, len as u64);
            assert!(got == data, "{key}: content differs");
        }
        assert_eq!(
            storage.list("s").await.unwrap().len(),
            2,
            "no staging files listed"
        );
    }

    #[tokio::test]
    async fn storage_bad_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = RecordingStorage::from_dir(tmp.path()).unwrap();
        let src = tmp.path().join("f");
        std::fs::write(&src, b"x").unwrap();
        for key in [
            "", "/abs", "a//b", "a/", "../x", "a/../b", "a/./b", ".", "a\\b", "a/b%20", "a#1",
            "a\nb",
        ] {
            assert!(
                matches!(
                    storage.put_file(key, &src).await,
                    Err(StorageError::BadKey(_))
                ),
                "put {key:?}"
            );
            assert!(
                matches!(storage.size(key).await, Err(StorageError::BadKey(_))),
                "size {key:?}"
            );
            assert!(
                matches!(storage.get(key, None).await, Err(StorageError::BadKey(_))),
                "get {key:?}"
            );
        }
        for prefix in ["/", "/abs", "../", "a//", "a/../b"] {
            assert!(
                matches!(storage.list(prefix).await, Err(StorageError::BadKey(_))),
                "list {prefix:?}"
            );
            assert!(
                matches!(
                    storage.delete_prefix(prefix).await,
                    Err(StorageError::BadKey(_))
                ),
                "delete {prefix:?}"
            );
        }
        assert!(matches!(
            storage.delete_prefix("").await,
            Err(StorageError::BadKey(_))
        ));
        assert!(src.exists());
        assert!(matches!(
            storage.get("f", Some(Range { start: 5, end: 2 })).await,
            Err(StorageError::Backend(_))
        ));
    }

    #[test]
    fn storage_bad_urls() {
        let no_env = |_: &str| None;
        for url in [
            "ftp://x",
            "s3://",
            "s3:///prefix",
            "s3://bucket/a%20b",
            "s3://bucket/a//b",
            "s3://user:secret@bucket/p",
            "s3://bucket/p?x=1",
            "file://relative",
            "file://relative/dir",
            "file:relative",
            "/abs/without/scheme",
            "not a url",
        ] {
            match RecordingStorage::from_url_with(url, no_env) {
                Err(StorageError::BadUrl(msg)) => {
                    assert!(!msg.contains("secret"), "{url}: {msg}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn storage_s3_describe_without_secrets() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("s3cr3t".to_string()),
            "AWS_REGION" => Some("eu-west-1".to_string()),
            "AWS_ENDPOINT_URL" => Some("http://127.0.0.1:9000".to_string()),
            _ => None,
        };
        let storage = RecordingStorage::from_url_with("s3://bucket/some/prefix/", env).unwrap();
        assert!(!storage.is_local());
        assert_eq!(
            storage.describe(),
            "s3://bucket/some/prefix (endpoint http://127.0.0.1:9000)"
        );
        assert!(!format!("{storage:?}").contains("s3cr3t"));
        assert_eq!(storage.local_path("a/b").unwrap(), None);
        let plain = RecordingStorage::from_url_with("s3://bucket", |_| None).unwrap();
        assert_eq!(plain.describe(), "s3://bucket");
    }

    #[test]
    fn storage_part_size() {
        assert_eq!(part_size(0), PART_SIZE);
        assert_eq!(part_size(20 << 20), PART_SIZE);
        let huge = 200u64 << 30;
        let part = part_size(huge) as u64;
        assert!(part > PART_SIZE as u64 && part.is_multiple_of(1 << 20));
        assert!(huge.div_ceil(part) <= 10_000);
    }
}
